# Shared by scripts/test and scripts/test-matrix: finding the supported
# CPythons and installing ferroloop into a virtualenv for each.
# (Sourced, not run.)

# Where ../shared/tools/build-cpython.sh puts the interpreters it builds.
CPYTHON_PREFIX=${CPYTHON_PREFIX:-$HOME/.local/cpython}

find_python() { # $1 = "3.X" or "3.Xt": print the interpreter's path, if any
  local cand
  if cand=$(command -v "python$1" 2>/dev/null) && "$cand" -V >/dev/null 2>&1; then
    echo "$cand"
    return
  fi
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" \
              "$CPYTHON_PREFIX/$1/bin/python$1"; do
    if [ -x "$cand" ]; then
      echo "$cand"
      return
    fi
  done
}

supported_pythons() { # every supported interpreter present, space-separated
  local v p found=""
  for v in 3.10 3.11 3.12 3.13 3.13t; do
    p=$(find_python "$v")
    if [ -n "$p" ]; then found="$found $p"; else echo "== CPython $v: not found, skipped" >&2; fi
  done
  echo "$found"
}

python_tag() { # "3.12", or "3.13t" for a free-threaded build
  "$1" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))'
}

gil_env() { # $1 = tag: free-threaded builds run with the GIL off (PYTHON_GIL
  # is a fatal error on other 3.13 builds)
  if [[ $1 == *t ]]; then echo PYTHON_GIL=0; fi
}

install_ferroloop() { # $1 = interpreter, $2 = extra ("test" or "bench"); prints the venv
  local py=$1 extra=$2 tag venv src
  tag=$(python_tag "$py")
  venv="$root/.venvs/py$tag"
  echo "== CPython $tag ($py): installing ferroloop[$extra] into $venv" >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
  src=$root
  if [[ $tag == *t ]]; then
    # PyO3 0.30 refuses free-threaded 3.13; 0.28.3 (within Cargo.toml's
    # range) is the last to support it. Build from a copy with that pin.
    src="$root/.venvs/src-$tag"
    rm -rf "$src" && mkdir -p "$src"
    git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$src")
    (cd "$src" && cargo update --quiet -p pyo3 --precise 0.28.3) >&2
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$src" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$src[$extra]" >&2
  echo "$venv"
}
