#!/usr/bin/env bash
# Run a command with an X display for the napari plugin's tests (vispy's canvas needs OpenGL,
# which Qt's offscreen platform does not provide): under Xvfb with Mesa's software renderer.
# Installs Xvfb and the X libraries Qt's xcb platform loads (Debian packages) when they are
# missing and apt-get is usable; without them the command runs as it is and the viewer tests skip.
set -euo pipefail
XCB_LIBS="xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libgl1-mesa-dri"
# grep reads all of ldconfig's output (no -q): with pipefail, an early exit of grep -q would kill
# ldconfig with SIGPIPE at random, and the check would report the libraries missing when they are not.
missing() { ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep libxcb-icccm.so.4 >/dev/null; }
if [ -n "${DISPLAY:-}" ]; then exec "$@"; fi
if missing && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "headless: installing Xvfb and Qt's X libraries" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $XCB_LIBS; } >/dev/null 2>&1 \
        || echo "headless: apt-get failed" >&2
fi
if missing; then
    echo "headless: no Xvfb; the napari viewer tests will skip" >&2
    exec "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$@"
