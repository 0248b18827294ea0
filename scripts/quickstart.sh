#!/usr/bin/env bash
# Quickstart: run at the repository root after `make demo` (or paste it into a shell there).
# Offline, it serves the Hub data `make demo` seeded; on the real Hub, export HF_TOKEN=hf_...
# and run only the commands after "2.". Smaller settings: MODEL, SAMPLES, SEQ_LEN, OUT, PORT.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"   # `make install` puts the `hfcompress` command in .venv/bin

# 1. A Hub: the project's Hub-compatible server on 127.0.0.1, over the data `make demo` seeded.
#    The token's user ("me") must belong to the orgs whose repos `hub seed` uploads.
export HF_TOKEN="${HF_TOKEN:-quickstart-token}"
export HF_ENDPOINT="http://127.0.0.1:${PORT:-8765}"
hfcompress hub serve --port "${PORT:-8765}" --data "${HUB_DATA:-$HOME/.cache/hfcompress/demo-hub}" \
    --token "me:$HF_TOKEN:HuggingFaceTB,sentence-transformers,Salesforce,fixtures,NeelNanda" >/dev/null &
trap 'kill $!' EXIT                  # the server stops with this shell; rerun the line above to serve again
until curl -sf "$HF_ENDPOINT/api/models" >/dev/null; do sleep 1; done
hfcompress hub seed --only ${SEED:-HuggingFaceTB/SmolLM2-135M-Instruct datasets}   # skips what is there

# 2. Prune, quantize the pruned model, push it, pull it into a fresh cache and generate.
MODEL="${MODEL:-HuggingFaceTB/SmolLM2-135M-Instruct}"
OUT="${OUT:-out}"
hfcompress prune "$MODEL" --method wanda --sparsity 0.5 --samples "${SAMPLES:-32}" --seq-len "${SEQ_LEN:-512}" \
    --output "$OUT/quickstart-wanda" --overwrite         # calibrated on NeelNanda/pile-10k (the default)
hfcompress quantize "$OUT/quickstart-wanda" --method bnb-nf4 --output "$OUT/quickstart-wanda-nf4" --overwrite
hfcompress push "$OUT/quickstart-wanda-nf4" me/quickstart-wanda-nf4
HF_HOME="$(mktemp -d)" hfcompress pull me/quickstart-wanda-nf4 --generate "The capital of France is"
