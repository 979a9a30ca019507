#!/usr/bin/env bash
# Checks that the README's C++ block is examples/readme.cpp word for word: the
# ```cpp block right after the line `<!-- examples/readme.cpp -->`.
#
#   examples/readme_matches.sh <README.md> <readme.cpp>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <README.md> <readme.cpp>" >&2
  exit 64
fi
block=$(awk '
  /^<!-- examples\/readme.cpp -->$/ { marked = 1; next }
  marked && !inside && /^```cpp$/ { inside = 1; next }
  inside && /^```$/ { exit }
  inside { print }
' "$1")
if [[ -z $block ]]; then
  echo "FAILED: $1 has no \`\`\`cpp block after '<!-- examples/readme.cpp -->'" >&2
  exit 1
fi
if ! diff -u --label "README.md's C++ block" --label "$2" <(printf '%s\n' "$block") "$2"; then
  echo "FAILED: the README's C++ block is not $2; make them the same" >&2
  exit 1
fi
echo "README's C++ block is $2"
