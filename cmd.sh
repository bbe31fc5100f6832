# How jobs run. run_local.sh runs JOB=1:N on this machine (parallel, at most --max-jobs at once);
# run_slurm.sh submits each job to Slurm with sbatch --wait. Choose with CMD_BACKEND=local|slurm.
# train_cmd: ESPnet training (with Slurm: --ngpu GPUs, for --multiprocessing_distributed true);
# cuda_cmd: one-GPU jobs (stage 7's posterior dump jobs with --ngpu > 0); decode_cmd: CPU jobs.
case "${CMD_BACKEND:-local}" in
    local) export train_cmd="run_local.sh" cuda_cmd="run_local.sh" decode_cmd="run_local.sh" ;;
    slurm) export train_cmd="run_slurm.sh --gpu ${ngpu:-1}" cuda_cmd="run_slurm.sh --gpu 1" decode_cmd="run_slurm.sh" ;;
    *) echo "cmd.sh: unknown CMD_BACKEND=${CMD_BACKEND}" >&2; return 1 ;;
esac
