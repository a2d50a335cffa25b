#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the report's headless-browser test.
# Best effort: without root or apt the test skips (and says why) instead of failing.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_browser: no root/apt-get; the headless-browser report test will skip"
  exit 0
fi
echo "install_browser: apt-get install chromium chromium-driver (about a minute)"
{ apt-get install -y -q chromium chromium-driver ||
  { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; } >/tmp/lmpress-apt.log 2>&1 ||
  echo "install_browser: apt-get failed (see /tmp/lmpress-apt.log); the browser test will skip"
exit 0
