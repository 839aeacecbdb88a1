// Layer-level tests against straightforward reference computations: RMSNorm, RoPE, attention and its mask,
// the vocabulary-parallel loss at tp=1, configs and presets, activation checkpointing.
#include <gtest/gtest.h>

#include "cluster/errors.h"
#include "tests/model/reference_model.h"
#include "tests/model/test_configs.h"
#include "model/attention.h"
#include "model/llama.h"
#include "model/rms_norm.h"
#include "model/rotary.h"
#include "model/tp_layers.h"

namespace lcl::model {
namespace {

using testing::RefAttention;

TEST(RmsNorm, MatchesReference) {
  torch::manual_seed(1);
  RmsNorm norm(16, 1e-5);
  torch::NoGradGuard g;
  norm->weight.uniform_(0.5, 1.5);
  torch::Tensor x = torch::randn({2, 3, 16}) * 3;
  EXPECT_TRUE(torch::allclose(norm(x), testing::RefRmsNorm(x, norm->weight, 1e-5), 1e-5, 1e-6));
}

TEST(Rotary, MatchesElementwiseRotationForAnyTheta) {
  torch::manual_seed(2);
  torch::Tensor x = torch::randn({2, 3, 5, 8});
  torch::Tensor pos = torch::tensor({0, 1, 2, 7, 100, 3, 3, 4, 0, 1}).view({2, 5});
  for (double theta : {10000.0, 500000.0}) {
    torch::Tensor got = ApplyRotary(x, MakeRotaryTables(pos, 8, theta));
    EXPECT_TRUE(torch::allclose(got, testing::RefRope(x, pos, theta), 1e-5, 1e-5)) << "theta " << theta;
  }
  // Position 0 is the identity; rotation preserves the norm of each pair.
  torch::Tensor zero = ApplyRotary(x, MakeRotaryTables(torch::zeros({2, 5}, torch::kInt64), 8, 10000.0));
  EXPECT_TRUE(torch::allclose(zero, x));
}

TEST(Attention, CausalPaddingMaskLetsPaddedQueriesSeeOnlyThemselves) {
  torch::Tensor mask = MakeCausalPaddingMask(torch::tensor({0, 0, 1, 1}).view({1, 4}), 4, 0);  // left padded
  auto m = mask[0][0];
  EXPECT_TRUE(m[0][0].item<bool>());
  EXPECT_FALSE(m[1][0].item<bool>());  // padded key
  EXPECT_TRUE(m[3][2].item<bool>());
  EXPECT_FALSE(m[2][3].item<bool>());  // future key
  EXPECT_EQ(m.sum().item<int64_t>(), 1 + 1 + 1 + 2);
}

TEST(Attention, ExplicitAndDefaultPathsMatchReferenceWithPaddingAndGqa) {
  torch::manual_seed(3);
  const int64_t b = 2, h = 4, hkv = 2, t = 6, d = 8;
  torch::Tensor q = torch::randn({b, h, t, d}), k = torch::randn({b, hkv, t, d}), v = torch::randn({b, hkv, t, d});
  torch::Tensor valid = torch::tensor({1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1}).view({b, t});
  torch::Tensor ref = RefAttention(q, k, v, valid, /*causal=*/true);
  torch::Tensor mask = MakeCausalPaddingMask(valid, t, 0);
  torch::Tensor kr = k.repeat_interleave(h / hkv, 1), vr = v.repeat_interleave(h / hkv, 1);
  for (bool force_explicit : {true, false}) {
    torch::Tensor got = ScaledDotProductAttention(q, kr, vr, mask, force_explicit);
    // Row 1's first two queries are padding: compare real queries only.
    EXPECT_TRUE(torch::allclose(got[0], ref[0], 1e-5, 1e-5)) << "explicit=" << force_explicit;
    EXPECT_TRUE(torch::allclose(got[1].narrow(1, 2, 4), ref[1].narrow(1, 2, 4), 1e-5, 1e-5));
    EXPECT_FALSE(got.isnan().any().item<bool>());
  }
}

// The SDPA path (LibTorch's fused kernel: the CPU flash kernel here) against the explicit matmul + softmax, in values
// and in the gradients of q, k and v: causal attention with left padding (generation batches) and right padding
// (training batches), grouped-query heads repeated as LlamaAttention does, and one KV-cache decode step.
TEST(Attention, SdpaMatchesExplicitInValuesAndGradientsWithLeftAndRightPaddingAndGqa) {
  torch::manual_seed(5);
  const int64_t b = 3, h = 8, hkv = 2, t = 40, d = 16;
  torch::Tensor valid = torch::ones({b, t}, torch::kInt64);
  valid[1].narrow(0, 0, 7).zero_();    // left padding
  valid[2].narrow(0, 29, 11).zero_();  // right padding
  torch::Tensor q0 = torch::randn({b, h, t, d}), k0 = torch::randn({b, hkv, t, d}), v0 = torch::randn({b, hkv, t, d});
  torch::Tensor grad_out = torch::randn({b, h, t, d}) * valid.view({b, 1, t, 1});  // real queries only
  torch::Tensor mask = MakeCausalPaddingMask(valid, t, 0);
  struct Result {
    torch::Tensor y, dq, dk, dv;
  };
  auto run = [&](bool force_explicit) {
    torch::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                  v = v0.clone().requires_grad_(true);
    torch::Tensor y = ScaledDotProductAttention(q, k.repeat_interleave(h / hkv, 1), v.repeat_interleave(h / hkv, 1),
                                                mask, force_explicit);
    y.backward(grad_out);
    return Result{y.detach(), q.grad(), k.grad(), v.grad()};
  };
  const Result sdpa = run(false), expl = run(true);
  torch::Tensor real = valid.view({b, 1, t, 1}).to(torch::kBool).expand({b, h, t, d});
  EXPECT_LT((sdpa.y - expl.y).masked_select(real).abs().max().item<double>(), 1e-5);
  EXPECT_LT((sdpa.dq - expl.dq).abs().max().item<double>(), 1e-5);
  EXPECT_LT((sdpa.dk - expl.dk).abs().max().item<double>(), 1e-5);
  EXPECT_LT((sdpa.dv - expl.dv).abs().max().item<double>(), 1e-5);
  EXPECT_GT(expl.dk.abs().sum().item<double>(), 0.0);  // the gradients compared are not all zero
  // And both are the reference attention.
  torch::Tensor ref = RefAttention(q0, k0.repeat_interleave(h / hkv, 1), v0.repeat_interleave(h / hkv, 1), valid, true);
  EXPECT_LT((sdpa.y - ref).masked_select(real).abs().max().item<double>(), 1e-5);

  // One decode step over a cache of t keys (the generation path): q_len 1, past t - 1.
  torch::Tensor last = MakeCausalPaddingMask(valid, 1, t - 1);  // [B, 1, 1, T]
  torch::Tensor q1 = q0.narrow(2, t - 1, 1), kr = k0.repeat_interleave(h / hkv, 1),
                vr = v0.repeat_interleave(h / hkv, 1);
  torch::Tensor a = ScaledDotProductAttention(q1, kr, vr, last, false),
                e = ScaledDotProductAttention(q1, kr, vr, last, true);
  EXPECT_LT((a - e).abs().max().item<double>(), 1e-5);
  EXPECT_LT((a - ref.narrow(2, t - 1, 1)).narrow(0, 0, 2).abs().max().item<double>(), 1e-5);  // rows whose last is real
}

TEST(Attention, SegmentsOfGivesEachRunOfEqualNonzeroMaskValues) {
  // Right padded, left padded, packed (episodes 1, 2, 3 then padding), all padding.
  torch::Tensor mask = torch::tensor({1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 0, 0, 0, 0, 0}).view({4, 5});
  torch::Tensor s = SegmentsOf(mask);
  torch::Tensor want = torch::tensor({0, 0, 3, 1, 2, 3, 2, 0, 2, 2, 2, 2, 2, 4, 1}).view({-1, 3});
  EXPECT_TRUE(torch::equal(s, want)) << s;
  EXPECT_THROW(SegmentsOf(mask.view({-1})), c10::Error);
}

// Segment attention (the training path) against the dense masked SDPA and the explicit reference, in values on real
// queries and in the gradients of q, k and v: right-padded, left-padded and packed rows, GQA heads repeated.
TEST(Attention, SegmentedCausalMatchesDenseMaskedInValuesAndGradients) {
  torch::manual_seed(6);
  const int64_t b = 3, h = 4, hkv = 2, t = 37, d = 16;
  torch::Tensor valid = torch::ones({b, t}, torch::kInt64);
  valid[0].narrow(0, 30, 7).zero_();   // right padding
  valid[1].narrow(0, 0, 5).zero_();    // left padding
  valid[2].narrow(0, 11, 9).fill_(2);  // packed: episodes 1, 2, 3, then padding
  valid[2].narrow(0, 20, 13).fill_(3);
  valid[2].narrow(0, 33, 4).zero_();
  torch::Tensor real = valid.ne(0).view({b, 1, t, 1}).expand({b, h, t, d});
  torch::Tensor q0 = torch::randn({b, h, t, d}), k0 = torch::randn({b, hkv, t, d}), v0 = torch::randn({b, hkv, t, d});
  torch::Tensor grad_out = torch::randn({b, h, t, d}) * real;
  struct Result {
    torch::Tensor y, dq, dk, dv;
  };
  auto run = [&](bool segmented) {
    torch::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                  v = v0.clone().requires_grad_(true);
    torch::Tensor kr = k.repeat_interleave(h / hkv, 1), vr = v.repeat_interleave(h / hkv, 1);
    torch::Tensor y = segmented ? SegmentedCausalAttention(q, kr, vr, SegmentsOf(valid))
                                : ScaledDotProductAttention(q, kr, vr, MakeCausalPaddingMask(valid, t, 0));
    y.backward(grad_out);
    return Result{y.detach(), q.grad(), k.grad(), v.grad()};
  };
  const Result seg = run(true), dense = run(false);
  EXPECT_LT((seg.y - dense.y).masked_select(real).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(seg.y.masked_select(real.logical_not()).eq(0).all().item<bool>());  // zero outside the segments
  EXPECT_LT((seg.dq - dense.dq).abs().max().item<double>(), 1e-5);
  EXPECT_LT((seg.dk - dense.dk).abs().max().item<double>(), 1e-5);
  EXPECT_LT((seg.dv - dense.dv).abs().max().item<double>(), 1e-5);
  EXPECT_GT(seg.dk.abs().sum().item<double>(), 0.0);
  // Row 2's second episode is the reference attention of its tokens alone (nothing leaks across episodes).
  auto ep = [&](const torch::Tensor& x) { return x.narrow(0, 2, 1).narrow(2, 11, 9); };
  torch::Tensor ref = RefAttention(ep(q0), ep(k0.repeat_interleave(h / hkv, 1)), ep(v0.repeat_interleave(h / hkv, 1)),
                                   torch::ones({1, 9}, torch::kInt64), /*causal=*/true);
  EXPECT_LT((ep(seg.y) - ref).abs().max().item<double>(), 1e-5);
  // Segments out of order or outside the rows are refused.
  EXPECT_THROW(SegmentedCausalAttention(q0, q0, q0, torch::tensor({0, 5, 3, 0, 0, 2}).view({-1, 3})), c10::Error);
  EXPECT_THROW(SegmentedCausalAttention(q0, q0, q0, torch::tensor({3, 0, 2}).view({-1, 3})), c10::Error);
  EXPECT_THROW(SegmentedCausalAttention(q0, q0, q0, torch::tensor({0, 30, 10}).view({-1, 3})), c10::Error);
}

TEST(VocabParallelCrossEntropy, MatchesTorchCrossEntropyAndGradientAtTp1) {
  torch::manual_seed(4);
  torch::Tensor logits = (torch::randn({7, 11}) * 4).requires_grad_(true);
  torch::Tensor targets = torch::tensor({0, 10, 3, -100, 5, 5, -100});
  torch::Tensor loss = VocabParallelCrossEntropy(logits, targets, TpGroup{});
  EXPECT_EQ(loss[3].item<float>(), 0.0f);
  loss.sum().backward();
  torch::Tensor ref_logits = logits.detach().clone().requires_grad_(true);
  torch::Tensor ref = torch::nn::functional::cross_entropy(
      ref_logits, targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  ref.backward();
  EXPECT_NEAR(loss.sum().item<float>(), ref.item<float>(), 1e-4);
  EXPECT_TRUE(torch::allclose(logits.grad(), ref_logits.grad(), 1e-5, 1e-6));
}

TEST(ModelConfig, PresetsValidateAndLlava7bHasRealShapes) {
  for (const auto& name : ModelConfig::PresetNames()) EXPECT_NO_THROW(ModelConfig::FromPreset(name).Validate(1));
  ModelConfig c = ModelConfig::FromPreset("llava-7b");
  EXPECT_EQ(c.text.hidden_size, 4096);
  EXPECT_EQ(c.text.num_hidden_layers, 32);
  EXPECT_EQ(c.text.intermediate_size, 11008);
  EXPECT_EQ(c.vision.num_patches(), 256);
  EXPECT_EQ(c.VisionLayersUsed(), 23);
  EXPECT_NO_THROW(c.Validate(8));
  EXPECT_THROW(ModelConfig::FromPreset("huge"), ConfigError);
}

TEST(ModelConfig, JsonRoundTripAndPlainLlamaConfig) {
  ModelConfig c = testing::TestConfig();
  ModelConfig back = ModelConfig::FromJson(c.ToJson(), "test");
  EXPECT_EQ(back.ToJson(), c.ToJson());
  // A plain HF LlamaConfig: num_key_value_heads defaults to num_attention_heads.
  auto plain = nlohmann::json::parse(R"({"vocab_size": 100, "hidden_size": 64, "num_attention_heads": 8,
      "num_hidden_layers": 3, "intermediate_size": 96, "rope_theta": 500000.0, "rms_norm_eps": 1e-6})");
  ModelConfig p = ModelConfig::FromJson(plain, "config.json");
  EXPECT_EQ(p.text.num_key_value_heads, 8);
  EXPECT_EQ(p.text.rope_theta, 500000.0);
  plain["hidden_size"] = "wide";
  EXPECT_THROW(ModelConfig::FromJson(plain, "config.json"), ConfigError);
}

TEST(ModelConfig, HeadsKvHeadsAndVocabMustDivideByTp) {
  ModelConfig c = testing::TestConfig(/*kv_heads=*/2);
  EXPECT_NO_THROW(c.Validate(2));
  try {
    c.Validate(4);  // 2 KV heads over 4 ranks
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads=2"), std::string::npos) << e.what();
  }
  c.text.vocab_size = 65;
  EXPECT_THROW(c.Validate(2), ConfigError);
  c = testing::TestConfig();
  c.vision_feature_layer = -7;
  EXPECT_THROW(c.Validate(1), ConfigError);
}

TEST(ActivationCheckpointing, GivesEqualLossAndGradients) {
  ModelConfig c = testing::TestConfig();
  torch::manual_seed(5);
  LlamaForCausalLM plain(c.text, TpGroup{}, false);
  LlamaForCausalLM ckpt(c.text, TpGroup{}, true);
  {
    torch::NoGradGuard g;
    auto src = plain->named_parameters();
    for (auto& p : ckpt->named_parameters()) p.value().copy_(src[p.key()]);
  }
  torch::Tensor ids = torch::randint(0, 60, {2, 9});
  torch::Tensor mask = torch::ones_like(ids);
  torch::Tensor pos = torch::arange(9).unsqueeze(0).expand({2, 9});
  torch::Tensor a = plain->forward(plain->Embed(ids), pos, mask).pow(2).mean();
  torch::Tensor b = ckpt->forward(ckpt->Embed(ids), pos, mask).pow(2).mean();
  a.backward();
  b.backward();
  EXPECT_NEAR(a.item<float>(), b.item<float>(), 1e-7);
  auto ref = plain->named_parameters();
  for (const auto& p : ckpt->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::allclose(p.value().grad(), ref[p.key()].grad(), 1e-5, 1e-7)) << p.key();
  }
}

}  // namespace
}  // namespace lcl::model
