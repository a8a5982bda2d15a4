#!/usr/bin/env bash
# N processes of `python -m jaxseg.main ARGS...` on this machine, connected by
# jax.distributed over 127.0.0.1 (JAX's CPU collectives), each with its own CPU
# devices: the multi-host code path on one machine (what the tests use).
#
#   launch/local_cpu.sh N --config=configs/psl_camvid.py:runlocal --workdir=W [...]
#
# Process 0 prints to this terminal; process i > 0 logs to $LOG_DIR/process_i.log.
# SIGTERM / Ctrl-C are passed to every process: they save a checkpoint at the
# same step and exit 75; rerun the same command to resume. The exit status is
# the first non-zero one of the processes (0 when all finished).
#
# Variables:
#   CPU_DEVICES  CPU devices per process (default 1)
#   PORT         coordinator port on 127.0.0.1 (default: a free one)
#   LOG_DIR      where process i > 0 logs (default: a new directory under /tmp)
#   PYTHON       interpreter (default python3)
#   DRY_RUN=1    print the commands instead of running them
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
N=$1; shift
CPU_DEVICES=${CPU_DEVICES:-1}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/jaxseg_local.XXXXXX)}

run() {  # run I ARGS...: the command of process I
  local i=$1; shift
  local cmd=(env JAX_PLATFORMS=cpu
             XLA_FLAGS="--xla_force_host_platform_device_count=$CPU_DEVICES${XLA_FLAGS:+ $XLA_FLAGS}"
             "$PYTHON" -m jaxseg.main "$@")
  if (( N > 1 )); then
    cmd+=(--coordinator_address="127.0.0.1:$PORT" --num_processes="$N" --process_id="$i")
  fi
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  elif (( i == 0 )); then
    "${cmd[@]}" &
  else
    "${cmd[@]}" >"$LOG_DIR/process_$i.log" 2>&1 &
  fi
}

pids=()
for ((i = 0; i < N; i++)); do
  run "$i" "$@"
  [[ "${DRY_RUN:-0}" == 1 ]] || pids+=($!)
done
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0
(( N > 1 )) && echo "local_cpu.sh: $N processes on 127.0.0.1:$PORT; logs of 1..$((N - 1)) in $LOG_DIR" >&2

forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward TERM INT
status=0
for pid in "${pids[@]}"; do
  while true; do  # `wait` returns early when a trapped signal arrives
    set +e; wait "$pid"; rc=$?; set -e
    kill -0 "$pid" 2>/dev/null || break
  done
  (( status == 0 )) && status=$rc
done
exit "$status"
