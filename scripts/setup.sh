# Set-up steps shared by scripts/run and scripts/test (sourced, not run). Each step checks
# before it installs, so a second run reuses what the first one installed and takes seconds.
# Works as root (no sudo needed; fresh Debian images have none) and as a user with sudo.

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$CHECKOUT/.venv
TORCH_VERSION=2.13.0
APT_UPDATED=

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: Debian/Ubuntu packages, after one `apt-get update` per run (a fresh
# machine has no package lists yet).
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        echo "setup: apt-get update" >&2
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    echo "setup: apt-get install $*" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# python_env [EXTRAS]: .venv with torch and recond (editable, with EXTRAS such as [test]).
python_env() {
    local extras=${1:-}
    if [ ! -x "$VENV/bin/python" ]; then
        echo "setup: python3 -m venv .venv" >&2
        # Debian's python3 lacks ensurepip until python3-venv is installed.
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    # torch before recond, so pyproject's range pulls nothing bigger. Any torch already in the
    # venv stays: on a GPU machine install a CUDA build there first and this step keeps it.
    if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"; then
        echo "setup: pip install torch==$TORCH_VERSION" >&2
        "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
    fi
    # Reinstalled only when pyproject.toml (the dependency list) is newer than the last install.
    local stamp="$VENV/.recond-installed$extras"
    if [ ! -e "$stamp" ] || [ "$CHECKOUT/pyproject.toml" -nt "$stamp" ]; then
        echo "setup: pip install -e .$extras" >&2
        "$VENV/bin/pip" install -q -e "$CHECKOUT$extras"
        touch "$stamp"
    fi
    compile_numba_kernels
}

# compile_numba_kernels: numba compiles rembg's alpha matting (pymatting, explicit signatures) on
# its first import, about 60 CPU-s, and caches the result beside the package. Done once here, so
# neither the first daemon start nor the suite's first processes (several at once, each
# compiling the same kernels) pay it. Under NUMBA_CACHE_DIR the check cannot see that cache, so
# it imports every time (about 3 s once compiled).
compile_numba_kernels() {
    if [ -z "${NUMBA_CACHE_DIR:-}" ] \
            && ls "$VENV"/lib/python3*/site-packages/pymatting/*/__pycache__/*.nbi >/dev/null 2>&1; then
        return
    fi
    echo "setup: compiling rembg's numba kernels (about a minute, once)" >&2
    "$VENV/bin/python" -c "import rembg; from recond.pipeline import raster_cpu; raster_cpu.kernel()"
}
