# Two entry points (see README.md): `make demo` and `make test`.
# Each creates .venv on first use with a Python >= 3.12 found on PATH or under pyenv,
# installs the project into it, then runs.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MPI_RANKS ?= 2

.PHONY: demo test test-serial test-mpi venv clean

demo: $(STAMP)
	$(VENV)/bin/hybrid demo --overwrite

test: test-serial test-mpi

test-serial: $(STAMP)
	$(PY) -m pytest tests

# FEM tests marked `mpi` again on two ranks; a hung rank is killed after 20 minutes.
test-mpi: $(STAMP)
	timeout 1200 $(VENV)/bin/mpirun -n $(MPI_RANKS) $(PY) -m pytest -m mpi -q -p no:cacheprovider tests

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  interpreter=""; \
	  for candidate in python3 python3.14 python3.13 python3.12; do \
	    path=$$(command -v $$candidate 2>/dev/null) || continue; \
	    if $$path -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then interpreter=$$path; break; fi; \
	  done; \
	  if [ -z "$$interpreter" ]; then \
	    root=$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv); \
	    for path in $$(ls -d $$root/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -V -r); do \
	      if $$path -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then interpreter=$$path; break; fi; \
	    done; \
	  fi; \
	  if [ -z "$$interpreter" ]; then \
	    echo "error: hybrid needs Python >= 3.12 (DOLFINx wheels require it); none found on PATH or under pyenv." >&2; \
	    echo "       Install one (e.g. 'pyenv install 3.12' or your OS package python3.12) and re-run." >&2; \
	    exit 1; \
	  fi; \
	  echo "creating $(VENV) with $$interpreter"; \
	  $$interpreter -m venv $(VENV); \
	fi; \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e '.[test]'; \
	touch $(STAMP)

clean:
	rm -rf $(VENV) results
