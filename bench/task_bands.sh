# Sourced by the benchmark scripts that measure per task kind and prompt length band
# (make_quality_table.sh, calibrate_confidence.sh), so that they measure the same bands.
# task_bands KIND sets `flag`, the kvstream eval flag that sizes a generated task, and
# `bands`, its values: about 500 and 1,000 tokens (NEEDLE_TOKENS, SINGLE_RECORDS override
# them); an unknown kind is reported and returns 1.
task_bands() {
  case $1 in
    needle) flag=--target_tokens bands=${NEEDLE_TOKENS:-400-600 900-1150} ;;
    single|multi|multi_lives) flag=--records bands=${SINGLE_RECORDS:-40-64 110-140} ;;
    *) echo "$(basename "$0"): unknown kind $1" >&2; return 1 ;;
  esac
}
