#!/bin/bash
# The six audits of docs/RESULTS.md ("Audits of a user-defined model on LFW faces"):
# examples/faces_model.py on ../shared/data/lfw, FedSGD and FedAvg, with and without DP-SGD.
# About 12 minutes on 2 CPU cores. Run from the repository root; results go to OUT.
set -u
GRADLEAK=${GRADLEAK:-.venv/bin/gradleak}
OUT=${1:-bench/audit}
M="--model examples/faces_model.py:make_model --data ../shared/data/lfw --samples 4"
M="$M --budget 2m --fail-above recognisable=0.1 --no-progress --overwrite"
SIG="--model-arg activation=sigmoid --model-arg pooling=avg"
DP="--defense dpsgd:1.0:1.0"
FEDAVG="--protocol fedavg --local-steps 5 --batch-size 4"
run() {
    name=$1
    shift
    echo "== $name: $*"
    "$GRADLEAK" audit $M "$@" --out "$OUT/$name"
    echo "exit $?"
}
run fedsgd
run fedsgd-dp $DP
run fedavg $FEDAVG
run fedavg-dp $FEDAVG $DP
run sigmoid-fedsgd $SIG
run sigmoid-fedsgd-dp $SIG $DP
