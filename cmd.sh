# How jobs run. run_local.sh runs JOB=1:N on this machine (parallel, at most --max-jobs at once);
# run_slurm.sh submits each job to Slurm with sbatch --wait. Choose with CMD_BACKEND=local|slurm.
case "${CMD_BACKEND:-local}" in
    local) export train_cmd="run_local.sh" decode_cmd="run_local.sh" ;;
    slurm) export train_cmd="run_slurm.sh --gpu 1" decode_cmd="run_slurm.sh" ;;
    *) echo "cmd.sh: unknown CMD_BACKEND=${CMD_BACKEND}" >&2; return 1 ;;
esac
