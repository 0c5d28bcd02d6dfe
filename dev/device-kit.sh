#!/usr/bin/env bash
# Builds .device-kit/ (outside git), what dev/device-grids.sh needs on a GPU machine that reaches no network:
#   .device-kit/wheels/  this project's pinned versions of the light Python packages (transformers, datasets,
#                        huggingface_hub and their pure-Python or small dependencies), built for the device's
#                        Python; torch, numpy, pandas, pyarrow, scikit-learn, matplotlib, ... are the device's own
#   .device-kit/data/    the Multi30k files the translation grids read (from ../shared/data; never shipped)
# Usage: dev/device-kit.sh [PYTHON_VERSION]   (default 3.12, the device image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${1:-3.12}
pip=.venv/bin/pip
kit=.device-kit
# heavy or binary packages the device image has, and what only tests and development need
heavy='^(torch|numpy|pandas|pyarrow|scipy|scikit-learn|matplotlib|pillow|contourpy|fonttools|kiwisolver|cycler|pyparsing|python-dateutil|tzdata|sympy|mpmath|networkx|jinja2|markupsafe|sentencepiece|lxml|psutil|ruff|pytest|pluggy|iniconfig|hypothesis|sortedcontainers|trl|peft|evaluate|hf_losses)=='
rm -rf "$kit.partial" && mkdir -p "$kit.partial/wheels" "$kit.partial/data"
$pip freeze --exclude-editable | grep -v ' @ ' | grep -viE "$heavy" > "$kit.partial/requirements.txt"
$pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest "$kit.partial/wheels" -r "$kit.partial/requirements.txt" 2> >(grep -v "is ignored: it is neither" >&2)
cp -r ../shared/data/multi30k "$kit.partial/data/"
rm -rf "$kit" && mv "$kit.partial" "$kit"
echo "$kit: $(ls "$kit/wheels" | wc -l) wheels, $(du -sh "$kit" | cut -f1) in all (carry limit 64 MiB)"
