"""Weights & Biases logging that never blocks or prompts, plus what Lightning's logger leaves out.

    python -m seglight fit --config configs/quickstart.yaml --config configs/logger/wandb.yaml

- `WandbLogger`: Lightning's, with the mode chosen before `wandb.init` so a run never waits on a
  login prompt or an unreachable server: WANDB_MODE when the user set it; otherwise online with
  credentials (WANDB_API_KEY, ~/.netrc, wandb settings) and a server that answers within
  `connect_timeout` seconds; otherwise offline, with one line saying where the run is and the
  `wandb sync <dir>` command that uploads it later. Its `save_dir` (hence `trainer.log_dir`, where
  config.yaml, images/ and test reports go) is the run's own folder, so runs never overwrite each
  other's files.

Callbacks that log into W&B live with the other callbacks: seglight.callbacks.SaveConfig (the
resolved config into the W&B run) and seglight.callbacks.WandbClassMetrics (per-class tables).
"""

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from seglight._moved import moved
from seglight.errors import ConfigError

DEFAULT_HOST = "https://api.wandb.ai"


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger that picks online/offline/disabled without ever prompting.

    Args:
        name: display name of the run; null = W&B's random name.
        save_dir: folder under which W&B writes `wandb/<run folder>`.
        version: id of a run to resume.
        offline: force offline mode (checkpoints can still be logged: they upload on sync).
        dir: same as save_dir (W&B's own name for it).
        id: same as version.
        project: W&B project; null = $WANDB_PROJECT or "seglight".
        log_model: log checkpoints as W&B artifacts: true = the best/last checkpoints at the end
            of training, "all" = every checkpoint when saved, false = none.
        prefix: string put at the beginning of metric keys.
        checkpoint_name: name of the model artifact; null = "model-<run id>".
        connect_timeout: seconds to wait for the W&B server before falling back to offline.
        **kwargs: arguments of wandb.init (entity, group, tags, notes, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | None = None,
        id: str | None = None,
        project: str | None = None,
        log_model: Literal["all"] | bool = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        connect_timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("mode", None) is not None:  # jsonargparse passes wandb.init's as None
            raise ConfigError(
                "trainer.logger.init_args.mode: set WANDB_MODE (online, offline, disabled) instead"
            )
        self.connect_timeout = connect_timeout
        self.mode_reason = ""  # why the run is offline, for the message
        self._forced_offline = offline
        self._announced = False
        project = project or os.environ.get("WANDB_PROJECT", "seglight")
        # Lightning's `offline=True` refuses log_model and sets WANDB_MODE for the whole
        # process; the mode is passed to wandb.init instead (see `experiment`).
        super().__init__(
            name=name, save_dir=save_dir, version=version, offline=False, dir=dir, id=id,
            project=project, log_model=log_model, prefix=prefix,
            checkpoint_name=checkpoint_name, **kwargs,
        )  # fmt: skip
        # wandb warns about `anonymous` even when None: leave it out (it has no effect now).
        self._wandb_init.pop("anonymous", None)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            mode, self.mode_reason = choose_mode(self._forced_offline, self.connect_timeout)
            self._wandb_init["mode"] = mode
            if mode == "disabled":  # wandb would still create the folder, empty
                self._wandb_init.pop("dir", None)
            elif self._wandb_init.get("dir"):
                Path(self._wandb_init["dir"]).mkdir(parents=True, exist_ok=True)
        run = super().experiment
        if not self._announced:
            self._announced = True
            if self.mode_reason:
                folder = run_folder(run)
                print(
                    f"seglight: W&B is offline ({self.mode_reason}); the run is in {folder}\n"
                    f"  upload it later with: wandb sync {folder}",
                    flush=True,
                )
        return run

    @property
    def save_dir(self) -> str | None:
        """The run's own folder (<save_dir>/wandb/<run folder>) once the run exists, so that
        `trainer.log_dir` is per run; the configured save_dir before, or when disabled."""
        folder = run_folder(self._experiment) if self._experiment is not None else None
        return str(folder) if folder is not None else self._save_dir


def choose_mode(forced_offline: bool, timeout: float) -> tuple[str, str]:
    """("online" | "offline" | "disabled", reason for going offline or ""), without prompting.

    WANDB_MODE set by the user wins; "dryrun" is W&B's old name for offline."""
    user_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if user_mode == "dryrun":
        user_mode = "offline"
    if user_mode in ("online", "offline", "disabled"):
        return user_mode, "WANDB_MODE=offline" if user_mode == "offline" else ""
    if user_mode:
        raise ConfigError(f"WANDB_MODE: {user_mode!r} is not one of online, offline, disabled")
    if forced_offline:
        return "offline", "offline: true"
    host = os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST
    if find_credentials(host) is None:
        return "offline", "no W&B credentials: set WANDB_API_KEY or run `wandb login`"
    if not reachable(host, timeout):
        return "offline", f"{host} did not answer within {timeout:g} s"
    return "online", ""


def find_credentials(host: str) -> str | None:
    """Where wandb would find an API key for `host` (env, netrc, settings), or None. The same
    sources as wandb's own login, read without its prompt and without the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "environment"
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:  # another wandb layout: only the environment counts
        return None
    try:
        if read_netrc_auth(host=host):
            return "netrc"
    except Exception:  # noqa: BLE001 - a malformed netrc means no usable key
        pass
    settings = wandb_setup.singleton().settings
    if settings.api_key:
        return "settings"
    return None


def reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the host of `url` opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def run_folder(run: Any) -> Path | None:
    """<dir>/wandb/(offline-)run-<time>-<id>: what `wandb sync` takes; None for a disabled run
    (whose `dir` is a throw-away temporary folder)."""
    settings = getattr(run, "settings", None)
    if settings is None or getattr(settings, "mode", "") == "disabled":
        return None
    files = getattr(run, "dir", None)  # <run folder>/files
    return Path(files).parent if files else None


__getattr__ = moved(
    __name__,
    {
        "SaveConfig": "seglight.callbacks.config",
        "WandbClassMetrics": "seglight.callbacks.wandb_tables",
        "class_metrics_media": "seglight.callbacks.wandb_tables",
        "wandb_loggers": "seglight.callbacks.wandb_tables",
    },
)
