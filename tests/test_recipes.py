"""Built-in motion recipes: the paper's eight motions, their prompts, and user recipe files."""

from __future__ import annotations

import pytest

from lamp_cli import recipes
from lamp_cli.errors import InvalidInput, NotFound

PAPER_MOTIONS = {
    "horse_run": "horse run",
    "birds_fly": "birds fly",
    "firework": "firework",
    "helicopter": "helicopter",
    "rain": "rain",
    "waterfall": "waterfall",
    "turn_to_smile": "turn to smile",
    "play_the_guitar": "play the guitar",
}


def test_the_eight_paper_motions_ship():
    listed = recipes.list_recipes()
    assert [r.name for r in listed] == sorted(PAPER_MOTIONS)
    assert recipes.recipe_names() == sorted(PAPER_MOTIONS)
    for r in listed:
        assert r.prompt == PAPER_MOTIONS[r.name]
        assert len(r.eval_prompts) == 6 and len(set(r.eval_prompts)) == 6
        assert (r.frames, r.stride, r.width, r.height) == (16, 1, 512, 320)
        assert r.steps > 0 and r.description


def test_eval_prompts_are_the_papers():
    assert recipes.load_recipe("horse_run").eval_prompts == [
        "a horse runs in the universe",
        "a horse runs on the Mars",
        "a horse runs on the grass",
        "a horse runs on the road",
        "a red horse runs in the sky",
        "Guan Yu rides a red horse",
    ]
    assert recipes.load_recipe("waterfall").eval_prompts[3] == "waterfall and a Ferrari"
    assert recipes.load_recipe("birds_fly").eval_prompts[1] == "birds fly in the sky, over the sea"
    assert (
        recipes.load_recipe("play_the_guitar").eval_prompts[-1]
        == "an astronaut plays the guitar, photorealistic"
    )


def test_unknown_recipe_is_not_found_with_hint():
    with pytest.raises(NotFound) as err:
        recipes.load_recipe("moonwalk")
    assert "horse_run" in err.value.message
    assert "lamp recipes" in err.value.hint


def test_user_recipe_file(tmp_path):
    path = tmp_path / "wave.toml"
    path.write_text(
        'name = "wave"\nprompt = "a hand waves"\neval_prompts = ["a robot waves"]\n[defaults]\nframes = 8\n'
    )
    r = recipes.load_recipe(str(path))
    assert (r.name, r.prompt, r.eval_prompts, r.frames, r.width) == (
        "wave",
        "a hand waves",
        ["a robot waves"],
        8,
        512,
    )
    assert r.to_dict()["source"] == str(path)


@pytest.mark.parametrize(
    "text,message",
    [
        ('prompt = "x"\n', "'name'"),
        ('name = "x"\nprompt = "y"\neval_prompts = "z"\n', "eval_prompts"),
        ('name = "x"\nprompt = "y"\n[defaults]\nframes = 0\n', "positive integer"),
        ('name = "x"\nprompt = "y"\n[defaults]\nfps = 8\n', "unknown key"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_recipe_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):
        recipes.load_recipe(str(path))


def test_source_checkout_fallback(monkeypatch, tmp_path):
    """Without the packaged `lamp_cli.motions` (source tree, editable install), motions/ beside
    the package is read; with neither, there are no built-ins and the error says so."""
    monkeypatch.setattr(recipes, "RECIPE_PACKAGE", "lamp_cli_no_such_package.motions")
    assert recipes.recipe_names() == sorted(PAPER_MOTIONS)
    monkeypatch.setattr(recipes, "_SOURCE_MOTIONS", tmp_path / "missing")
    assert recipes.list_recipes() == []
    with pytest.raises(NotFound, match="none found"):
        recipes.load_recipe("rain")


def test_packaged_recipes_are_read_through_importlib_resources(monkeypatch, tmp_path):
    """An installed wheel carries the TOMLs as the package `lamp_cli.motions`: simulate one."""
    pkg = tmp_path / "lamp_fake_install"
    (pkg / "motions").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "motions" / "spin.toml").write_text('name = "spin"\nprompt = "a top spins"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(recipes, "RECIPE_PACKAGE", "lamp_fake_install.motions")
    assert recipes.recipe_names() == ["spin"]  # the package wins over the source folder
    assert recipes.load_recipe("spin").prompt == "a top spins"
