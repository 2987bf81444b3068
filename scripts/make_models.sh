#!/usr/bin/env bash
# Regenerate the shipped sample data and model versions from scratch (about a minute on 2 cores).
# Deletes models/lstm and models/ann first so the results are version 1 again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
rm -rf models/lstm models/ann
"$PY" -m ml_training.synth --out data/bts_sample.csv --stations 4 --days 21 --seed 0
"$PY" -m ml_training --data data/bts_sample.csv --model lstm --repository models --resample 300 --seed 42 --quiet
"$PY" -m ml_training --data data/bts_sample.csv --model ann --repository models --resample 300 --seed 42 --quiet
