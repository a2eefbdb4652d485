# Login shells over SSH: /etc/profile has just reset PATH; serve-ssh passes the container's as PYTORCH_CUDA_PATH
# (SetEnv), so `ssh` sessions find the venv's python, pip, verify and jupyter as `docker exec` does.
if [ -n "${PYTORCH_CUDA_PATH:-}" ]; then
    PATH=$PYTORCH_CUDA_PATH
    export PATH
fi
