#!/usr/bin/env bash
# launcher/slurm/loom.sbatch against a real single-node Slurm (Debian's slurm-wlm), as
# /work/shared/docs/slurm-local.md describes: the test starts munge (unless it runs), a private
# slurmctld and slurmd on this host (their own ports, state and logs in a temporary directory),
# submits 2-task CPU jobs with sbatch (ranks started by srun --mpi=pmix, then by mpirun inside
# the allocation), waits for them and checks their metrics. It stops what it started, by pid.
# Installs slurm-wlm and munge with tools/setup_deps.sh --with-slurm when they are missing
# (as root); exits 77 (skipped) when it cannot. Label: slow.
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
: "${LOOM_SOURCE_DIR:?set LOOM_SOURCE_DIR to the repository root}"

need=(sbatch slurmctld slurmd munged munge unmunge scontrol sinfo)
missing=0
for c in "${need[@]}"; do command -v "$c" > /dev/null || missing=1; done
if ((missing)); then
  if [[ $(id -u) != 0 ]]; then
    echo "SKIPPED: slurm-wlm/munge are not installed and this is not root"
    exit 77
  fi
  note "installing slurm-wlm and munge"
  "$LOOM_SOURCE_DIR/tools/setup_deps.sh" --with-slurm > setup_deps.log 2>&1 ||
    { tail -20 setup_deps.log; echo "SKIPPED: could not install slurm-wlm and munge"; exit 77; }
fi
[[ $(id -u) == 0 ]] || { echo "SKIPPED: the local Slurm needs root (SlurmUser=root)"; exit 77; }

started_munged=0
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
  done
  if ((started_munged)) && [[ -f /run/munge/munged.pid ]]; then
    kill "$(cat /run/munge/munged.pid)" 2> /dev/null || true
  fi
  cleanup
}
trap stop_all EXIT

# --- munge --------------------------------------------------------------------------------------
if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
  note "starting munged"
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey > /dev/null; then mungekey --create > /dev/null 2>&1 || true; fi
    [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2> /dev/null
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  su -s /bin/sh munge -c /usr/sbin/munged
  started_munged=1
  for _ in $(seq 50); do munge -n 2> /dev/null | unmunge > /dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge | grep -q "STATUS: *Success" || fail "munge does not work"

# --- a private slurm ---------------------------------------------------------------------------
host=$(hostname -s)
cpus=$(nproc --all)  # not nproc: it honours OMP_NUM_THREADS
mkdir -p slurm/state slurm/spool slurm/log
export SLURM_CONF="$work/slurm/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=loomtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/log/slurmctld.log
SlurmdLogFile=$work/slurm/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
note "starting slurmctld and slurmd ($host, $cpus CPUs)"
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
for _ in $(seq 50); do [[ -s slurm/slurmctld.pid ]] && break; sleep 0.1; done
pids+=("$(cat slurm/slurmctld.pid)")
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 50); do [[ -s slurm/slurmd.pid ]] && break; sleep 0.1; done
pids=("$(cat slurm/slurmd.pid)" "${pids[@]}")
idle=0
for _ in $(seq 100); do
  if sinfo -h -o %t 2> /dev/null | grep -q idle; then idle=1; break; fi
  sleep 0.3
done
((idle)) || { cat slurm/log/*.log | tail -30; fail "the node did not become idle"; }

# --- jobs -----------------------------------------------------------------------------------
make_tiny_data data
make_tiny_config tiny.pbtxt
build_dir=$(cd "$(dirname "$LOOM_TRAIN")/.." && pwd)
for launch in srun mpirun; do
  note "sbatch: 2 CPU tasks, ranks started by $launch"
  out="$work/job-$launch.out"
  id=$(sbatch --parsable --nodes=1 --ntasks=2 --cpus-per-task=1 --output="$out" \
    --chdir="$work" --job-name="loom-$launch" \
    --export="ALL,LOOM_REPO=$LOOM_SOURCE_DIR,LOOM_BUILD_DIR=$build_dir,LOOM_DEVICE=cpu,LOOM_LAUNCH=$launch,LOOM_RUN_DIR=$work/run-$launch" \
    "$LOOM_SOURCE_DIR/launcher/slurm/loom.sbatch" "$work/tiny.pbtxt" \
    --set 'train { max_steps: 30 eval_every_steps: 10 }') || fail "sbatch failed"
  state=""
  for _ in $(seq 600); do
    state=$(scontrol show job "$id" 2> /dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 0.5
  done
  exit_code=$(scontrol show job "$id" | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p')
  [[ "$state" == COMPLETED && "$exit_code" == 0:0 ]] ||
    { tail -40 "$out"; fail "job $id ($launch) ended $state, exit code $exit_code"; }
  grep -q "loom.sbatch: job $id on 1 node(s), 2 ranks, device cpu" "$out" || fail "no sbatch header line"
  grep -q "trainer: interformer .* 2 ranks" "$out" || fail "the job did not train on 2 ranks"
  grep -q '^loom train: done: step=30 ' "$out" || { tail -20 "$out"; fail "no summary line"; }
  metrics="$work/run-$launch/metrics.jsonl"
  [[ $(wc -l < "$metrics") == 3 ]] || fail "$metrics: expected 3 evaluations"
  auc=$(tail -1 "$metrics" | sed -n 's/.*"auc": \([0-9.]*\).*/\1/p')
  awk -v a="$auc" 'BEGIN { exit !(a > 0.6 && a < 1) }' || fail "final AUC '$auc'"
  echo "job $id ($launch): COMPLETED, final AUC $auc"
done
echo "PASS: loom.sbatch trains a 2-task CPU job under Slurm (srun and mpirun)"
