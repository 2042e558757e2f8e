// The committed tiny models load through the HF path and answer held-out generated
// questions at the figures the README reports for them (greedy decoding is
// deterministic; the floor leaves one question of slack for float summation order
// under other BLAS thread counts). A broken forward pass, cache, tokenizer or prompt
// template shows up here as a collapse to chance (~0.02).
#include <gtest/gtest.h>

#include "common/eval/tasks.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "common/model/tokenizer.h"

namespace kvstream::model {
namespace {

constexpr char kSystem[] = "Answer with the value from the context.";

double ExactMatch(const std::string& dir, const std::string& kind, int n, int records,
                  int target_tokens) {
  auto model = Model::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  auto tok = Tokenizer::Load(dir + "/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!model.ok() || !tok.ok()) return -1;
  auto words = eval::LoadWords();
  EXPECT_TRUE(words.ok());
  const Tokenizer& t = **tok;
  eval::TaskGenerator gen(
      *words, [&t](const std::string& s) { return static_cast<int>(t.Encode(s, false)->size()); });
  gen.set_single_token_names(true);  // kvstream eval's default, as the models are trained
  eval::TaskOptions o;
  o.kind = kind;
  o.num_examples = n;
  o.num_records = records;
  o.target_tokens = target_tokens;
  o.seed = 7;  // kvstream eval's default --task_seed
  SamplingOptions s;
  s.max_new_tokens = 8;
  s.stop_tokens = StopTokens(t);
  double em = 0;
  for (const eval::Example& ex : gen.Generate(o)) {
    auto prompt = BuildQaPrompt(t, ex.context, ex.question, {kSystem});
    EXPECT_TRUE(prompt.ok());
    const std::vector<int32_t> head(prompt->tokens.begin(), prompt->tokens.end() - 1);
    auto pre = (*model)->Prefill(head);
    EXPECT_TRUE(pre.ok());
    auto g = Generate(**model, *pre->cache, prompt->tokens.back(), s);
    EXPECT_TRUE(g.ok());
    em += eval::ExactMatch(t.Decode(g->tokens, true).value(), ex.answers);
  }
  return em / n;
}

TEST(TinyModelsTest, ScoutFindsTheNeedleAt512Tokens) {
  // README: 1.000 on 20 questions.
  EXPECT_GE(ExactMatch("testdata/models/scout", "needle", 20, 0, 512), 0.95);
}

TEST(TinyModelsTest, ScoutAndLargeAnswerSingleHopAt512Tokens) {
  // The model runtime's targets: exact match on single-hop recall at 512 tokens of
  // scout >= 0.7 and large >= 0.9. 72 records make 504 context tokens in which every
  // other record is a distractor; chance is ~1/72. README: scout 0.875, large 0.900 on
  // these 40 questions (0.908 and 0.917 on 120).
  EXPECT_GE(ExactMatch("testdata/models/scout", "single", 40, 72, 0), 0.85);
  EXPECT_GE(ExactMatch("testdata/models/large", "single", 40, 72, 0), 0.875);
}

TEST(TinyModelsTest, TwoThousandTokenPairAnswersSingleHopAt1024And2048Tokens) {
  // The -2k pair is the committed pair carried on with gapped positions, then on
  // multi-hop questions. Targets: single-hop exact match at 1024 tokens scout >= 0.85 and
  // large >= 0.9, at 2048 tokens >= 0.7 and >= 0.8. 146 records make ~1,070 prompt
  // tokens, 292 ~2,090. README (40 questions): scout 0.975 and 0.950, large 1.000 and
  // 0.950; on these 20: scout 1.000 and 0.900, large 1.000 and 0.950.
  EXPECT_GE(ExactMatch("testdata/models-2k/scout", "single", 20, 146, 0), 0.95);
  EXPECT_GE(ExactMatch("testdata/models-2k/scout", "single", 20, 292, 0), 0.85);
  EXPECT_GE(ExactMatch("testdata/models-2k/large", "single", 20, 146, 0), 0.95);
  EXPECT_GE(ExactMatch("testdata/models-2k/large", "single", 20, 292, 0), 0.90);
}

TEST(TinyModelsTest, TwoThousandTokenPairAnswersMultiHopAt512Tokens) {
  // Target: multi-hop exact match >= 0.6 for the large model at 512 tokens. 64 records
  // (32 people, 32 towns) make 501 prompt tokens; the answer "<town>: <code>" counts only
  // with both hops right. README (40 questions): scout 1.000, large 0.975; on these 20:
  // scout 1.000, large 0.950. The committed pair scores 0.000 here.
  EXPECT_GE(ExactMatch("testdata/models-2k/scout", "multi", 20, 64, 0), 0.95);
  EXPECT_GE(ExactMatch("testdata/models-2k/large", "multi", 20, 64, 0), 0.90);
}

}  // namespace
}  // namespace kvstream::model
