#!/bin/bash
# Device calls of 2026-11-28 (issue 10): 6.65M-DOF strong-scaling points (POINTS, default
# strong_8M:4; the 4-rank point in the twelfth session, strong_8M:2 in the thirteenth), which the
# 2026-11-27 session could not reach. Expects /tmp/sitepart_aa from an earlier call on the same warm
# machine and .devbundle2/sitepart_ab carried now: the cp312 wheels of dolfinx-solver-real,
# fenics-basix/ffcx/ufl, mpi4py, mpich, gmsh, cffi, pycparser unpacked into one site folder with
# mpich's and gmsh's lib/ and bin/, and the X11/GL libraries gmsh needs (syslib/).
# usage: POINTS=strong_8M:R BUDGET_S=S bash benchmarks/device/run_strong_8M.sh
set -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
LOG=$OUT/device.log
exec > >(tee -a $LOG) 2>&1
T=/tmp/hyb; rm -rf $T; mkdir -p $T/scratch $T/cache
cat /tmp/sitepart_aa .devbundle2/sitepart_ab | xz -d | tar -xf - -C $T || exit 3
S=$T/site
for f in $S/syslib/*; do n=$(basename $f); if ldconfig -p 2>/dev/null | grep -q "[[:space:]]$n[[:space:]]"; then rm -f $f; fi; done
echo "[$SECONDS s] unpacked; carried system libs kept: $(ls $S/syslib | tr '\n' ' ')"
export PATH=$S/bin:$PATH LD_LIBRARY_PATH=$S/lib:$S/lib/mpich:$S/syslib PYTHONPATH=$PWD:$S XDG_CACHE_HOME=$T/cache
nvidia-smi -L; echo "cores $(nproc --all)"; free -g | head -2; uptime
python3 -c "import hybrid.forward, dolfinx, gmsh; from mpi4py import MPI; print('dolfinx', dolfinx.__version__, 'gmsh', gmsh.__version__, MPI.Get_library_version()[:30])" || exit 4
cp benchmarks/results/cluster_scaling.json $OUT/cluster_scaling.json
echo "[$SECONDS s] scaling"
python3 benchmarks/cluster_scaling.py --points ${POINTS:-strong_8M:4} --append --budget-s ${BUDGET_S:-60} \
    --output $OUT/cluster_scaling.json --scratch $T/scratch --mpirun $S/bin/mpirun
echo "[$SECONDS s] done"
