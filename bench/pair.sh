# shellcheck shell=bash
# Sourced by the benchmark scripts: the model pair they measure and the files that
# belong to it. MODELS is a directory with scout/ and large/; the default,
# testdata/models-2k, is the pair the daemons and the demo use by default, and
# testdata/models is the first pair (512-token contexts, no multi-hop answers). Each
# known pair sets the defaults of PROJECTION (its scout -> large projection), MIXED_TABLE,
# NEEDLE_TABLE and SINGLE_TABLE (quality tables measured on it), KV_GATE (its measured
# --kv_min_confidence, bench/calibrate_confidence.sh) and MULTI_KIND (the multi-hop
# format its results use); a variable already set wins. Another MODELS sets none of them.
# RESULTS is where the sweeps write: bench/results for the default pair,
# bench/results/<pair> (e.g. bench/results/models) for any other, so measuring another
# pair leaves the default pair's committed figures alone.
MODELS=${MODELS:-testdata/models-2k}
MODELS=${MODELS%/}
MODELS=${MODELS#./}
if [[ $MODELS == testdata/models-2k ]]; then
  RESULTS=${RESULTS:-bench/results}
else
  RESULTS=${RESULTS:-bench/results/$(basename "$MODELS")}
fi
case $MODELS in
  testdata/models-2k)
    PROJECTION=${PROJECTION:-testdata/projections/scout_to_large_2k.safetensors}
    MIXED_TABLE=${MIXED_TABLE:-testdata/quality/tiny2k_mixed.json}
    NEEDLE_TABLE=${NEEDLE_TABLE:-testdata/quality/tiny2k_needle512.json}
    SINGLE_TABLE=${SINGLE_TABLE:-bench/results/heldout_models-2k/table_single.json}
    KV_GATE=${KV_GATE:-0.1}
    MULTI_KIND=${MULTI_KIND:-multi}
    ;;
  testdata/models)
    PROJECTION=${PROJECTION:-testdata/projections/scout_to_large.safetensors}
    MIXED_TABLE=${MIXED_TABLE:-testdata/quality/tiny_mixed.json}
    NEEDLE_TABLE=${NEEDLE_TABLE:-testdata/quality/tiny_needle512.json}
    SINGLE_TABLE=${SINGLE_TABLE:-bench/results/heldout_table_single.json}
    KV_GATE=${KV_GATE:-0.5}
    # Its committed multi-hop results were measured in the format now called multi_lives
    # (it answers neither format).
    MULTI_KIND=${MULTI_KIND:-multi_lives}
    ;;
esac
