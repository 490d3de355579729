"""The one exception type the CLI turns into a single `error:` line instead of a traceback."""

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value or input file that seglight cannot use, with a message saying why."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class DataError(ConfigError):
    """A dataset file or folder that cannot be used as it is: missing, corrupt, mislabelled."""


class NonFiniteLossError(RuntimeError):
    """The training loss became nan or inf (SegmentationModule's `nonfinite_loss="stop"`); the
    message names the step, the batch's files and where the batch was saved. Not a ConfigError:
    the CLI prints it as one line and exits with status 1, not 2."""


def streaming_failure(error: BaseException) -> str | None:
    """One line for an error that came from reading the object store while streaming (LitData
    wraps boto3's, obstore's or its own timeout in a RuntimeError), else None."""
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        module = type(current).__module__ or ""
        if module.split(".")[0] in ("botocore", "boto3", "obstore") or (
            type(current).__name__ == "ChunkWaitTimeoutError"
        ):
            detail = " ".join(str(current).split())[:200]
            return (f"streaming stopped: cannot read a chunk from the object store "
                    f"({type(current).__name__}: {detail}); when it is reachable again, resume "
                    "with --ckpt_path last (checkpoints keep the loader's position)")  # fmt: skip
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
