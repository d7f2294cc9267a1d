"""The model zoo's SSD300-MobileNetV2 checkpoints (official/cv/SSD) in our parameter names.

Our SSD300 names its parameters as the official network does (`network.backbone...`,
`network.multi_box...`: training checkpoints and the inference wrapper alike), so an official
training or evaluation checkpoint loads as it is. This table covers the parameters of an
`SSD300` cell saved on its own, without the `network.` wrapper.
"""
from src.engine.checkpoint import OfficialLayout

LAYOUT = OfficialLayout(
    name="model zoo SSD300-MobileNetV2",
    renames=((r"(backbone|multi_residual|multi_box)\.(.*)", r"network.\1.\2"),),
)
