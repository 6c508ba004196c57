# Shared by scripts/test, scripts/test-matrix and scripts/build-wheels:
# finding the supported CPythons and installing ferroloop into a virtualenv
# for each. (Sourced, not run; expects $root, the checkout.)
#
# An interpreter is a path, or "debian:/usr/bin/python3.X" for one that
# lives in the Debian-unstable root of ../shared/tools/debian-python.sh
# (CPython 3.14 and 3.15 on these Debian 12 machines): `in_env PY CMD...`
# runs CMD where PY runs (inside that root for those, which sees this
# machine's /work, /tmp and /root at the same paths).

# The versions ferroloop supports, oldest first (3.10 is end-of-life since
# October 2026 but still tested).
SUPPORTED_VERSIONS=${SUPPORTED_VERSIONS:-"3.10 3.11 3.12 3.13 3.13t 3.14 3.15"}

# Where ../shared/tools/build-cpython.sh puts the interpreters it builds.
CPYTHON_PREFIX=${CPYTHON_PREFIX:-$HOME/.local/cpython}
DEBIAN_PYTHON=${DEBIAN_PYTHON:-$root/../shared/tools/debian-python.sh}

in_env() { # $1 = interpreter; runs the rest where it runs
  local py=$1
  shift
  if [[ $py == debian:* ]]; then
    # (PIP_FIND_LINKS may name a folder of this machine the root lacks.)
    env -u PIP_FIND_LINKS bash "$DEBIAN_PYTHON" run "$@"
  else
    "$@"
  fi
}

py_exe() { # the interpreter's path, inside its environment
  echo "${1#debian:}"
}

_debian_root_ready=""
debian_root() { # set the Debian root up once (~1 min the first time); false if it cannot be
  if [ -z "$_debian_root_ready" ]; then
    _debian_root_ready=no
    local log="$root/.venvs/debian-python-setup.log" droot
    if [ -f "$DEBIAN_PYTHON" ] && [ "$(id -u)" = 0 ] &&
      droot=$(bash "$DEBIAN_PYTHON" setup 2>"$log") && unstale_checkout_mount "$droot" 2>>"$log"; then
      _debian_root_ready=yes
    elif [ -f "$DEBIAN_PYTHON" ]; then
      echo "== the Debian root for 3.14/3.15 could not be set up (root needed; see .venvs/debian-python-setup.log)" >&2
    fi
  fi
  [ "$_debian_root_ready" = yes ]
}

unstale_checkout_mount() { # $1 = the Debian root: make it see this checkout
  # A checkout outside /work, /tmp, /root and /home is bind-mounted into the
  # root on first use, and the mount outlives the checkout: a machine that
  # deletes a checkout and clones a new one at the same path (as CI does)
  # leaves the root showing the deleted directory, where nothing can be
  # created. A probe file written here must be visible through the root.
  local droot=$1 probe tries top
  top=$(git -C "$root" rev-parse --show-toplevel 2>/dev/null || echo "$root")
  probe=$(mktemp "$root/.venvs/.debian-probe.XXXXXX")
  for tries in 1 2 3; do
    if [ -e "$droot$probe" ]; then
      rm -f "$probe"
      return 0
    fi
    echo "the Debian root shows an older directory at $top: mounting this checkout again" >&2
    if mountpoint -q "$droot$top"; then umount -l "$droot$top"; fi
    (cd "$root" && bash "$DEBIAN_PYTHON" setup >/dev/null)
  done
  rm -f "$probe"
  echo "the Debian root does not show $root" >&2
  return 1
}

find_python() { # $1 = "3.X" or "3.Xt": print the interpreter, if any
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
  case $1 in
    3.14 | 3.15)
      if debian_root && bash "$DEBIAN_PYTHON" run "/usr/bin/python$1" -V >/dev/null 2>&1; then
        echo "debian:/usr/bin/python$1"
      fi
      ;;
  esac
}

supported_pythons() { # every supported interpreter present, space-separated
  local v p found=""
  mkdir -p "$root/.venvs"
  for v in $SUPPORTED_VERSIONS; do
    p=$(find_python "$v")
    if [ -n "$p" ]; then found="$found $p"; else echo "== CPython $v: not found, skipped" >&2; fi
  done
  echo "$found"
}

python_tag() { # "3.12", or "3.13t" for a free-threaded build
  in_env "$1" "$(py_exe "$1")" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))'
}

gil_env() { # $1 = tag: free-threaded builds run with the GIL off (PYTHON_GIL
  # is a fatal error on other 3.13 builds)
  if [[ $1 == *t ]]; then echo PYTHON_GIL=0; fi
}

source_for() { # $1 = tag: the tree to build ferroloop from for that version
  local tag=$1 src
  if [[ $tag == *t ]]; then
    # PyO3 0.30 refuses free-threaded 3.13; 0.28.3 (within Cargo.toml's
    # range) is the last to support it. Build from a copy with that pin.
    src="$root/.venvs/src-$tag"
    rm -rf "$src" && mkdir -p "$src"
    git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$src")
    (cd "$src" && cargo update --quiet -p pyo3 --precise 0.28.3) >&2
    echo "$src"
  else
    echo "$root"
  fi
}

target_dir_for() { # $1 = interpreter: Cargo's target directory for its builds
  # The Debian root has another C toolchain and glibc: its build scripts
  # and objects are kept apart from this machine's.
  if [[ $1 == debian:* ]]; then echo "$root/target/debian"; else echo "$root/target"; fi
}

install_ferroloop() { # $1 = interpreter, $2 = extra ("test" or "bench"), $3 = the venv's
  # name prefix (default "py": .venvs/py3.X); prints the venv
  local py=$1 extra=$2 tag venv src target
  tag=$(python_tag "$py")
  venv="$root/.venvs/${3:-py}$tag"
  echo "== CPython $tag ($py): installing ferroloop[$extra] into $venv" >&2
  [ -x "$venv/bin/python" ] || in_env "$py" "$(py_exe "$py")" -m venv "$venv" >&2
  src=$(source_for "$tag")
  target=$(target_dir_for "$py")
  in_env "$py" env CARGO_TARGET_DIR="$target" "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps "$src" >&2
  in_env "$py" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$src[$extra]" >&2
  echo "$venv"
}
