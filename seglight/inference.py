"""Moved to seglight.evaluation; old paths still work (warning)."""

from seglight._moved import moved

__getattr__ = moved(
    __name__,
    {
        "pad_to_multiple": "seglight.evaluation",
        "forward_padded": "seglight.evaluation",
        "EvalProtocol": "seglight.evaluation",
        "predict_logits": "seglight.evaluation",
        "split_images": "seglight.evaluation",
        "ModelFn": "seglight.evaluation",
    },
)
