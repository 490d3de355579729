"""Moved: checks and loading to seglight.checkpoints (`last` resolution to seglight.cli.ckpt_path),
atomic saves to seglight.callbacks.atomic_io
(AtomicCheckpointIO is also seglight.callbacks.AtomicCheckpointIO). Old import and class paths,
e.g. `plugins: seglight.checkpointing.AtomicCheckpointIO` in a config, still work (warning)."""

from seglight._moved import moved

_SAVING = ("AtomicCheckpointIO", "remove_stale_partials", "use_atomic_checkpoint_io")
_SAVING += ("PARTIAL_PREFIX", "PARTIAL_SUFFIX", "STALE_AFTER_S")
_LOADING = ("read_checkpoint", "check_seglight_checkpoint", "check_matches_model")
_LOADING += ("check_resumable",)
_CKPT_PATH = ("resolve_ckpt_path", "last_checkpoint_candidates")

__getattr__ = moved(
    __name__,
    {name: "seglight.callbacks.atomic_io" for name in _SAVING}
    | {name: "seglight.checkpoints" for name in _LOADING}
    | {name: "seglight.cli.ckpt_path" for name in _CKPT_PATH},
)
