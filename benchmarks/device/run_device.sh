#!/bin/bash
# The device-machine session of 2026-11-27 (one NVIDIA H200, 16 cores, no package index there):
# the 16-core points of benchmarks/cluster_scaling.py, then the CUDA tests and timings of the PINN.
# It expects, in git-ignored folders carried to the machine: .devbundle/site.tar.xz (the PyPI wheels
# of dolfinx-solver-real, fenics-basix/ffcx/ufl, mpi4py, mpich, gmsh, cffi, pycparser for Python 3.12,
# unpacked into one site folder with mpich's lib/ and bin/, plus the X11/GL libraries gmsh needs),
# .devrun/nibabel.tar.xz, and results/synthesize_{coupled,ph_release} (hybrid synthesize of the
# examples). Everything lands in $OUT.  usage: DEADLINE=S SCALING_S=S bash benchmarks/device/run_device.sh
set -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
LOG=$OUT/device.log
exec > >(tee -a $LOG) 2>&1
T=/tmp/hyb; rm -rf $T; mkdir -p $T/scratch $T/cache $T/py
tar -xJf .devbundle/site.tar.xz -C $T || exit 3
tar -xJf .devrun/nibabel.tar.xz -C $T/py || exit 3
S=$T/site
for f in $S/syslib/*; do n=$(basename $f); if ldconfig -p 2>/dev/null | grep -q "[[:space:]]$n[[:space:]]"; then rm -f $f; fi; done
echo "[$SECONDS s] unpacked; carried system libs kept: $(ls $S/syslib | tr '\n' ' ')"
export PATH=$S/bin:$PATH LD_LIBRARY_PATH=$S/lib:$S/lib/mpich:$S/syslib PYTHONPATH=$PWD:$S:$T/py XDG_CACHE_HOME=$T/cache
nvidia-smi -L; echo "cores $(nproc --all)"; free -g | head -2; uptime
python3 -c "import torch, nibabel; print('torch', torch.__version__, torch.cuda.is_available())"
python3 -c "import hybrid.forward, dolfinx, gmsh; from mpi4py import MPI; print('dolfinx', dolfinx.__version__, 'gmsh', gmsh.__version__, MPI.Get_library_version()[:30])" || { echo "FEM stack broken: scaling skipped"; SCALING_S=0; }
left() { echo $(( ${DEADLINE:-575} - SECONDS )); }
# --- issue 10: the points the last 16-core session could not reach
cp benchmarks/results/cluster_scaling.json $OUT/cluster_scaling.json
echo "[$SECONDS s] scaling"
[ "${SCALING_S:-330}" -gt 0 ] && python3 benchmarks/cluster_scaling.py --points weak_250k:16,strong_8M:16,strong_8M:8,strong_8M:4 --append \
    --budget-s ${SCALING_S:-330} --output $OUT/cluster_scaling.json --scratch $T/scratch --mpirun $S/bin/mpirun
# --- issue 9: CUDA path and timings
echo "[$SECONDS s] cuda tests"; uptime
timeout $(( $(left) < 120 ? $(left) : 120 )) python3 -m pytest -q -p no:cacheprovider -rA tests/inverse/test_problems.py -k cuda
echo "[$SECONDS s] invert coupled on cuda"
timeout $(( $(left) < 90 ? $(left) : 90 )) python3 -m hybrid invert benchmarks/device/invert_coupled_cuda.toml --output $T/gi_c --overwrite \
    && cp $T/gi_c/inversion.json $OUT/inv_coupled_cuda.json
echo "[$SECONDS s] pinn_steps on cuda"
timeout $(( $(left) < 90 ? $(left) : 90 )) python3 benchmarks/pinn_steps.py --device cuda --points 1024 4096 16384 65536 --steps 50 --output $OUT/pinn_steps_cuda.json
echo "[$SECONDS s] invert ph warm 1500 on cuda"
timeout $(( $(left) < 150 ? $(left) : 150 )) python3 -m hybrid invert benchmarks/device/invert_ph_warm_1500_cuda.toml --output $T/gi_p --overwrite \
    && cp $T/gi_p/inversion.json $OUT/inv_ph_cuda.json
echo "[$SECONDS s] done"
