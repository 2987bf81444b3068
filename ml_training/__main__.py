"""``python -m ml_training``: train a model and add it to the model repository."""

from ml_training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
