// Small model configurations shared by the model tests (fp32, CPU, seconds per test).
#pragma once

#include "model/model_config.h"

namespace lcl::model::testing {

// 2 layers, 4 heads / 2 KV heads (GQA), vocab 64, a 2-layer vision tower on 16 px images with 4 patches.
inline ModelConfig TestConfig(int kv_heads = 2, bool tied = false, const char* projector = "mlp2x_gelu") {
  ModelConfig c;
  c.text = LlamaConfig{/*vocab_size=*/64,
                       /*hidden_size=*/32,
                       /*intermediate_size=*/48,
                       /*num_hidden_layers=*/2,
                       /*num_attention_heads=*/4,
                       kv_heads,
                       /*max_position_embeddings=*/128,
                       1e-5,
                       /*rope_theta=*/10000.0,
                       tied};
  c.vision = ClipVisionConfig{
      /*hidden_size=*/24,        /*intermediate_size=*/40, /*num_hidden_layers=*/3,
      /*num_attention_heads=*/2, /*image_size=*/16,        /*patch_size=*/8,        3, 1e-5};
  c.projector_type = projector;
  c.vision_feature_layer = -2;
  c.image_token_id = 61;
  c.im_start_token_id = 62;
  c.im_end_token_id = 63;
  return c;
}

}  // namespace lcl::model::testing
