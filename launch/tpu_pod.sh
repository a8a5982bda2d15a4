#!/usr/bin/env bash
# jaxseg on a Cloud TPU VM slice: create (or reuse) it, copy this checkout to
# every worker, install, run `python -m jaxseg.main` on all workers at once,
# stream worker 0's log, delete on request.
#
#   launch/tpu_pod.sh create
#   launch/tpu_pod.sh copy                 # this checkout (git HEAD) to every worker
#   launch/tpu_pod.sh install              # pip install -e . and jax[tpu] on every worker
#   launch/tpu_pod.sh run --config=configs/rss_pascal.py --config.data.root=gs://B/VOC2010
#   launch/tpu_pod.sh log                  # attach to worker 0's log again
#   launch/tpu_pod.sh stop                 # SIGTERM: every worker saves, exits 75
#   launch/tpu_pod.sh delete
#   launch/tpu_pod.sh all ARGS...          # create, copy, install, run
#
# `run` adds --workdir=$WORKDIR and --distributed=on (JAX reads the slice's
# workers from the TPU metadata). Preempted spot slices: recreate, `run` the
# same ARGS, and the run resumes from the last checkpoint in $WORKDIR.
#
# Variables (defaults in brackets):
#   TPU_NAME         the slice [jaxseg]
#   ZONE             its zone [us-central2-b]
#   ACCELERATOR      accelerator type [v4-32]
#   TPU_VERSION      TPU VM image [tpu-ubuntu2204-base]
#   PROJECT          gcloud project [gcloud's default]
#   SPOT=1           create a spot (preemptible) slice
#   WORKDIR          gs:// run directory (required by run)
#   PYTHON           interpreter on the workers [python3]
#   DRY_RUN=1        print every command instead of running it
set -euo pipefail

TPU_NAME=${TPU_NAME:-jaxseg}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
PYTHON=${PYTHON:-python3}
REMOTE_DIR=jaxseg
LOG=\$HOME/jaxseg_run.log
gc=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE" ${PROJECT:+--project="$PROJECT"})

x() {  # run or print a command
  if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
on_all() { x "${gc[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$1"; }
on_0() { x "${gc[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=0 --command="$1"; }

create() {
  if [[ "${DRY_RUN:-0}" != 1 ]] && "${gc[@]}" describe "$TPU_NAME" "${where[@]}" >/dev/null 2>&1; then
    echo "tpu_pod.sh: reusing $TPU_NAME" >&2; return
  fi
  x "${gc[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR" \
    --version="$TPU_VERSION" ${SPOT:+--spot}
}
copy() {
  local tar=/tmp/jaxseg_src.tar.gz
  x git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$tar" HEAD
  x "${gc[@]}" scp "$tar" "$TPU_NAME":jaxseg_src.tar.gz "${where[@]}" --worker=all
  on_all "rm -rf $REMOTE_DIR && mkdir $REMOTE_DIR && tar xzf jaxseg_src.tar.gz -C $REMOTE_DIR"
}
install() {
  on_all "cd $REMOTE_DIR && $PYTHON -m pip install -q -e . 'jax[tpu]' gcsfs"
}
run() {
  : "${WORKDIR:?set WORKDIR=gs://BUCKET/RUN}"
  local args; args=$(printf '%q ' "$@")
  on_all "cd $REMOTE_DIR && nohup $PYTHON -m jaxseg.main --distributed=on --workdir=$WORKDIR $args > $LOG 2>&1 &"
  log
}
log() { on_0 "tail -n +1 -F $LOG"; }
stop() { on_all "pkill -TERM -f 'jaxseg.main' || true"; }
delete() { x "${gc[@]}" delete "$TPU_NAME" "${where[@]}" --quiet; }

cmd=${1:-}; shift || true
case "$cmd" in
  create|copy|install|log|stop|delete) "$cmd" ;;
  run) run "$@" ;;
  all) create; copy; install; run "$@" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
