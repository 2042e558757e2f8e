#!/usr/bin/env bash
# kvstream train-tiny end to end at toy scale: the pool tokenizer keeps every task word
# whole, a scout run plants its recall circuit, exports an HF directory and resumes from
# its checkpoint (not with another RoPE base), offset heads and recall circuits are
# planted or refused with a clear error, and a large run grows from that scout and keeps
# that provenance across a restart; a malformed checkpoint state is refused; a trained
# scout is carried on with gapped positions (and stopped part-way through its schedule),
# and what --continue_from refuses.
# Usage: train_tiny_test.sh KVSTREAM_BINARY
set -euo pipefail
BIN=$1
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" train-tiny --train=tokenizer --out="$DIR/out" >"$DIR/tok.log"
grep -q "2048 tokens written" "$DIR/tok.log" || fail "tokenizer size: $(cat "$DIR/tok.log")"
grep -q "600 of 600 task words are single tokens" "$DIR/tok.log" || fail "pool words split: $(cat "$DIR/tok.log")"

small=(--out="$DIR/out" --ckpt_dir="$DIR/ckpt" --threads=1 --batch=4 --micro_batch=2 --eval_questions=2
       --gate_every=1000 --checkpoint_every=10 --eval_every=10 --warmup=5)
"$BIN" train-tiny --train=scout --steps=10 "${small[@]}" >"$DIR/scout.log"
# The default circuit's distances come from this tokenizer: " is" and "?" are one token
# each, the assistant header seven.
grep -q "recall circuit: values see their names 2 tokens back, answers the names asked for 1, 8 back" \
  "$DIR/scout.log" || fail "no recall circuit: $(head -3 "$DIR/scout.log")"
grep -q '"rope_theta": 1000000.0' "$DIR/out/scout/config.json" || fail "scout rope_theta"
if "$BIN" train-tiny --train=scout --steps=20 --rope_theta=10000 "${small[@]}" 2>"$DIR/err.log" >/dev/null; then
  fail "resumed a checkpoint with another rope_theta"
fi
grep -q "was trained with 1e+06, found 10000" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
for f in config.json model.safetensors tokenizer.json generation_config.json training.json; do
  [[ -s $DIR/out/scout/$f ]] || fail "scout/$f not written"
done
grep -q '"vocab_size": 2048' "$DIR/out/scout/config.json" || fail "scout vocabulary"
"$BIN" train-tiny --train=scout --steps=20 "${small[@]}" >"$DIR/resume.log"
grep -q "resuming at step 10 of 20" "$DIR/resume.log" || fail "no resume: $(head -3 "$DIR/resume.log")"
grep -q '"step": 20' "$DIR/out/scout/training.json" || fail "resumed run did not export step 20"
# The export's evaluation history spans the restart (steps 10 and 20).
[[ $(grep -c '"single_hop_em"' "$DIR/out/scout/training.json") == 2 ]] ||
  fail "evaluations lost on resume: $(cat "$DIR/out/scout/training.json")"

# A checkpoint whose state has a field of another type, or no JSON object, is refused
# with the file named, not thrown.
for state in '{"step": "ten"}' '[1]' '{"step": 10, "rope_theta": "big"}'; do
  rm -rf "$DIR/ckbad" && cp -r "$DIR/ckpt" "$DIR/ckbad"
  printf '%s' "$state" >"$DIR/ckbad/scout/state.json"
  if "$BIN" train-tiny --train=scout --steps=30 "${small[@]}" --ckpt_dir="$DIR/ckbad" 2>"$DIR/err.log" >/dev/null; then
    fail "resumed from state $state"
  fi
  grep -qF "$DIR/ckbad/scout/state.json: expected the checkpoint's state (step, level, ...)" "$DIR/err.log" ||
    fail "state $state: $(cat "$DIR/err.log")"
done

"$BIN" train-tiny --train=large --steps=2 --grow_from="$DIR/out/scout" "${small[@]}" >"$DIR/large.log"
grep -q "grown from $DIR/out/scout (4 layers, hidden 96)" "$DIR/large.log" || fail "not grown: $(head -3 "$DIR/large.log")"
grep -q '"num_attention_heads": 8' "$DIR/out/large/config.json" || fail "large heads"
grep -q "\"grown_from\": \"$DIR/out/scout\"" "$DIR/out/large/training.json" || fail "provenance lacks grown_from"
# Resumed without --grow_from, the export still names the model it was grown from.
"$BIN" train-tiny --train=large --steps=4 "${small[@]}" >"$DIR/large2.log"
grep -q "resuming at step 2 of 4" "$DIR/large2.log" || fail "large did not resume: $(head -3 "$DIR/large2.log")"
grep -q "\"grown_from\": \"$DIR/out/scout\"" "$DIR/out/large/training.json" || fail "grown_from lost on resume"

# A trained scout carried on (--continue_from) with gapped positions: a new schedule from
# step 0, its weights as the start, both named in the export; the curriculum starts at
# --start_records.
mkdir -p "$DIR/out5" && cp "$DIR/out/tokenizer.json" "$DIR/out5/"
# Half its questions are multi-hop in the bridge format, and its evaluations report them.
"$BIN" train-tiny --train=scout --steps=2 --continue_from="$DIR/out/scout" --position_gaps=2048 \
  --start_records=12 --max_records=12 --multi_kind=multi --multi_share=0.5 "${small[@]}" \
  --out="$DIR/out5" --ckpt_dir="$DIR/ckpt7" >"$DIR/cont.log" 2>&1 || fail "continue: $(cat "$DIR/cont.log")"
grep -qE "step 2 eval: exact match [0-9.]+ on held-out multi-hop" "$DIR/cont.log" ||
  fail "no multi-hop evaluation: $(cat "$DIR/cont.log")"
grep -q '"multi_kind": "multi"' "$DIR/out5/scout/training.json" &&
  grep -q '"multi_share": 0.5' "$DIR/out5/scout/training.json" &&
  grep -q '"multi_hop_em"' "$DIR/out5/scout/training.json" ||
  fail "provenance lacks the multi-hop questions: $(cat "$DIR/out5/scout/training.json")"
# Resuming it with other questions than it was trained on is refused.
if "$BIN" train-tiny --train=scout --steps=3 --continue_from="$DIR/out/scout" --position_gaps=2048 \
     --start_records=12 --max_records=12 "${small[@]}" --out="$DIR/out5" --ckpt_dir="$DIR/ckpt7" \
     2>"$DIR/err.log" >/dev/null; then
  fail "resumed a multi-hop run without its questions"
fi
grep -qF -- "--multi_kind / --multi_share: expected the checkpoint's multi / 0.5 to resume it; found multi_lives / 0.15" \
  "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
grep -q "continued from $DIR/out/scout, curriculum at 12 records" "$DIR/cont.log" ||
  fail "not continued: $(head -3 "$DIR/cont.log")"
grep -q "starting at step 0 of 2" "$DIR/cont.log" || fail "continued run's schedule: $(head -3 "$DIR/cont.log")"
grep -q "\"continued_from\": \"$DIR/out/scout\"" "$DIR/out5/scout/training.json" || fail "provenance lacks continued_from"
grep -q '"position_gaps": 2048' "$DIR/out5/scout/training.json" || fail "provenance lacks position_gaps"
# --stop_after: the schedule spans --steps, the run stops and exports at that step.
mkdir -p "$DIR/out6" && cp "$DIR/out/tokenizer.json" "$DIR/out6/"
# Evaluated at every step, each once; the export is step 3 whatever it scores.
"$BIN" train-tiny --train=scout --steps=20 --stop_after=3 --continue_from="$DIR/out/scout" \
  "${small[@]}" --checkpoint_every=1 --eval_every=1 --out="$DIR/out6" --ckpt_dir="$DIR/ckpt10" \
  >"$DIR/stop.log" 2>&1 || fail "stop_after: $(cat "$DIR/stop.log")"
grep -q '"step": 3,' "$DIR/out6/scout/training.json" && grep -qE '"steps": 20,?$' "$DIR/out6/scout/training.json" ||
  fail "stop_after export: $(cat "$DIR/out6/scout/training.json")"
[[ $(grep -c '"single_hop_em"' "$DIR/out6/scout/training.json") == 3 ]] ||
  fail "stop_after evaluations: $(cat "$DIR/out6/scout/training.json")"
# Its checkpoint is at step 3: a run to stop sooner, or carrying on another model, is refused.
for bad in "--stop_after=2|expected the checkpoint in $DIR/ckpt10/scout at or before step 2; found step 3" \
           "--continue_from=$DIR/out5/scout|to carry that model on; found it continued from '$DIR/out/scout'"; do
  if "$BIN" train-tiny --train=scout --steps=20 "${bad%%|*}" "${small[@]}" --out="$DIR/out6" \
       --ckpt_dir="$DIR/ckpt10" 2>"$DIR/err.log" >/dev/null; then
    fail "resumed with ${bad%%|*}"
  fi
  grep -qF -- "${bad#*|}" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
done
if "$BIN" train-tiny --train=both --continue_from="$DIR/out/scout" --out="$DIR/out6" 2>"$DIR/err.log" >/dev/null; then
  fail "continued both models from one directory"
fi
grep -qF -- "--continue_from: expected --train=scout or --train=large" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
for bad in "--continue_from=$DIR/out/large|expected the scout shape (4 layers, hidden 96, intermediate 256, heads 4/2, rope_theta 1e+06); found 6 layers, hidden 192" \
           "--continue_from=$DIR/out/scout --grow_from=$DIR/out/scout|expected it or --grow_from, not both" \
           "--continue_from=$DIR/nothing|expected its tokenizer.json to be the one this run trains with" \
           "--continue_from=$DIR/out/scout --position_gaps=5000|--position_gaps: expected at most the models' max_position_embeddings (4096), found 5000" \
           "--continue_from=$DIR/out/scout --multi_kind=lives|--multi_kind: expected multi or multi_lives, found 'lives'" \
           "--continue_from=$DIR/out/scout --multi_share=0.9|--multi_share: expected a share from 0 to 0.85 (needles keep 0.15), found 0.9"; do
  # shellcheck disable=SC2086
  if "$BIN" train-tiny --train=scout --steps=2 ${bad%%|*} "${small[@]}" --out="$DIR/out5" \
       --ckpt_dir="$DIR/ckpt8" 2>"$DIR/err.log" >/dev/null; then
    fail "accepted ${bad%%|*}"
  fi
  grep -qF -- "${bad#*|}" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
done

# A scout trained with another tokenizer (here: one of 1024 entries) cannot seed this run.
mkdir -p "$DIR/other"
cp "$DIR/out/scout/"* "$DIR/other/"
"$BIN" train-tiny --train=tokenizer --vocab_size=1024 --out="$DIR/othertok" >/dev/null
cp "$DIR/othertok/tokenizer.json" "$DIR/other/tokenizer.json"
if "$BIN" train-tiny --train=large --steps=2 --grow_from="$DIR/other" --out="$DIR/out" \
     --ckpt_dir="$DIR/ckpt3" --threads=1 2>"$DIR/err.log" >/dev/null; then
  fail "grew from a model with a different tokenizer"
fi
grep -q "grow_from=$DIR/other: expected its tokenizer.json to be the one this run trains with" "$DIR/err.log" ||
  fail "error: $(cat "$DIR/err.log")"

# Growing needs the doubled shapes: the large model cannot grow from itself.
if "$BIN" train-tiny --train=large --steps=2 --grow_from="$DIR/out/large" --out="$DIR/out2" \
     --ckpt_dir="$DIR/ckpt2" --threads=1 2>"$DIR/err.log" >/dev/null; then
  fail "grew from a model of the same width"
fi
grep -q "cannot grow: hidden_size must be 384, found 192" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
# Planted offset heads (a fresh run) and what --offset_heads refuses.
mkdir -p "$DIR/out4" && cp "$DIR/out/tokenizer.json" "$DIR/out4/"
"$BIN" train-tiny --train=scout --steps=2 --offset_heads=2,6 --recall_circuit=none "${small[@]}" --out="$DIR/out4" \
  --ckpt_dir="$DIR/ckpt4" >"$DIR/offsets.log"
grep -q "layer 0: query heads 0-1 start out attending 2, 6 tokens back" "$DIR/offsets.log" ||
  fail "offset heads not planted: $(head -3 "$DIR/offsets.log")"
for bad in "2,x:expected integers separated by commas, found '2,x'" \
           "2,,6:expected integers separated by commas, found '2,,6'" \
           "2,0:expected offsets of at least 1, found 0" \
           "1,1,1,1,1:expected at most 4 offsets (the query heads of layer 0), found 5"; do
  if "$BIN" train-tiny --train=scout --steps=2 --offset_heads="${bad%%:*}" --recall_circuit=none "${small[@]}" --out="$DIR/out4" \
       --ckpt_dir="$DIR/ckpt5" 2>"$DIR/err.log" >/dev/null; then
    fail "accepted --offset_heads=${bad%%:*}"
  fi
  grep -qF "${bad#*:}" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
done
for bad in "--offset_heads=2|expected --recall_circuit=none with it" \
           "--recall_circuit=2-1|expected auto, none or KEY:Q1[,Q2] with integers (e.g. 2:1,8), found '2-1'" \
           "--recall_circuit=2:1,8,3|expected 1 to 2 query offsets (the query heads of kv head 0), found 3"; do
  if "$BIN" train-tiny --train=scout --steps=2 "${bad%%|*}" "${small[@]}" --out="$DIR/out4" \
       --ckpt_dir="$DIR/ckpt6" 2>"$DIR/err.log" >/dev/null; then
    fail "accepted ${bad%%|*}"
  fi
  grep -qF "${bad#*|}" "$DIR/err.log" || fail "error: $(cat "$DIR/err.log")"
done
echo PASS
