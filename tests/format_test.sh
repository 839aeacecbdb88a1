#!/usr/bin/env bash
# Every C++ file the repository tracks is formatted as .clang-format says (STYLE.md rule 14). On failure it lists
# the files and the fix: `clang-format -i FILE...` (the clang-format that launch/setup.sh installs).
set -uo pipefail
root=${LCL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 1
command -v clang-format >/dev/null || { echo "format_test: clang-format is not installed (launch/setup.sh installs it)"; exit 1; }
[ -f .clang-format ] || { echo "format_test: no .clang-format in $root"; exit 1; }
mapfile -t files < <(git ls-files '*.cc' '*.h' 2>/dev/null || find . -path ./build -prune -o \( -name '*.cc' -o -name '*.h' \) -print)
[ ${#files[@]} -gt 0 ] || { echo "format_test: found no C++ files under $root"; exit 1; }
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "format_test: ${#bad[@]} of ${#files[@]} files are not clang-formatted:"
  printf '  %s\n' "${bad[@]}"
  echo "fix: clang-format -i ${bad[*]}"
  exit 1
fi
echo "format_test: all ${#files[@]} C++ files formatted ($(clang-format --version))"
