"""The model side of lamp: base loading, the video UNet, the motion layers, first frames."""
