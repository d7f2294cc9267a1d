"""The model zoo's CRNN checkpoints (official/cv/CRNN, model_version V2) in our parameter names.

The official network is saved without a wrapper (`vgg.conv1.conv.weight`, `rnn.0.rnn.weight_ih_l0`;
its training checkpoints add the optimizer's `moments.` copies); ours sits under `network.`.
The official VGG defines a BatchNorm `bn1` that its construct never calls; it is dropped.
The Ascend-only V1 (P.DynamicRNN with raw `w1`/`b1` weights, a unidirectional second LSTM)
is another network and is refused with a message.
"""
from src.engine.checkpoint import OfficialLayout

LAYOUT = OfficialLayout(
    name="model zoo CRNN",
    renames=((r"(?:network\.)?(vgg\.conv[1-7]\..+|rnn\.[01]\.(?:rnn|embedding)\..+)", r"network.\1"),),
    ignored=((r"(?:network\.)?vgg\.bn1\..+", "vgg.bn1: a BatchNorm the official network defines but never calls"),),
    unsupported=((r"(?:network\.)?[wb][12](?:_bw)?",
                  "CRNN model_version V1 (the Ascend DynamicRNN variant with a one-directional second LSTM); "
                  "this repository builds V2, the official CPU/GPU network"),),
)
