# Shared by run-demo.sh and cleanup.sh (sourced, not run): how commands are run, or,
# under --dry-run (DRY_RUN=true), printed as "+ word word ..." lines that are valid shell.

# fd 3 is the script's stdout, so that commands shown inside $(...) still print.
exec 3>&1

say() { printf '==> %s\n' "$*" >&2; }

# A word as the shell would need it: bare when safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# The line --dry-run prints for a command: "+ word word ...".
show() {
  local line="+" word
  for word in "$@"; do line+=" $(quote "$word")"; done
  printf '%s\n' "$line" >&3
}

run() {
  if $DRY_RUN; then show "$@"; else "$@"; fi
}
