"""`python -m seglight fit --config configs/quickstart.yaml` — see seglight/cli/."""

from seglight.cli import main

if __name__ == "__main__":
    main()
