# Shared by scripts/test and .ci/run: make sure the programs some tests need are there,
# redis-server (the Redis tests) and chromium (the browser test). A missing one is
# installed with apt-get when this runs as root on a machine with apt-get; otherwise its
# tests are skipped, and this says so.
#   ENGINESCOPE_SYSTEM_PACKAGES=skip      never install anything
#   ENGINESCOPE_SYSTEM_PACKAGES=require   fail unless both end up installed (.ci/run)
# Afterwards MISSING_SYSTEM_PACKAGES lists what is still missing (empty when none).
# Usage: . scripts/_system_packages.sh
set -euo pipefail

_missing_system_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    echo "${missing[*]}"
}

_install_system_packages() {
    local mode="${ENGINESCOPE_SYSTEM_PACKAGES:-auto}"
    MISSING_SYSTEM_PACKAGES="$(_missing_system_packages)"
    [ -n "$MISSING_SYSTEM_PACKAGES" ] || return 0
    if [ "$mode" = skip ]; then
        :
    elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "== cannot install $MISSING_SYSTEM_PACKAGES here (needs root and apt-get)" >&2
    else
        echo "== installing $MISSING_SYSTEM_PACKAGES with apt-get (once; a minute or two)" >&2
        # shellcheck disable=SC2086 # one word per package
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING_SYSTEM_PACKAGES; then
            MISSING_SYSTEM_PACKAGES="$(_missing_system_packages)"
        else
            echo "== apt-get could not install $MISSING_SYSTEM_PACKAGES" >&2
        fi
    fi
    case " $MISSING_SYSTEM_PACKAGES " in
        *" redis-server "*) echo "== without redis-server: the Redis tests are skipped" >&2 ;;
    esac
    case " $MISSING_SYSTEM_PACKAGES " in
        *" chromium "*) echo "== without chromium: the browser test is skipped" >&2 ;;
    esac
    if [ "$mode" = require ] && [ -n "$MISSING_SYSTEM_PACKAGES" ]; then
        echo "== ENGINESCOPE_SYSTEM_PACKAGES=require: $MISSING_SYSTEM_PACKAGES missing" >&2
        return 1
    fi
}

_install_system_packages
export MISSING_SYSTEM_PACKAGES
