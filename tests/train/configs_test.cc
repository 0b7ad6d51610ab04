// Every runnable config in configs/ loads, validates, and fits the data it names: the model,
// embedding and optimizer sections pass their modules' validation, and the embedding features
// match the schema the converter or generator produces (by name, kind and dimension) — the
// checks loom train makes at start-up, without the data.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/data/movielens.h"
#include "csrc/data/synthetic.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/model/model_config.h"
#include "csrc/optim/dense_optimizer.h"
#include "csrc/proto/config_io.h"
#include "csrc/proto/data.pb.h"
#include "csrc/train/input_adapter.h"

namespace loom::train {
namespace {

std::string Path(const std::string& rel) { return std::string(LOOM_SOURCE_DIR) + "/" + rel; }

proto::DataSchema BarsSchema(const std::string& rel) {
  proto::DelimitedTextConfig c;
  LOOM_CHECK_OK(config::ParseTextProtoFileInto(Path(rel), &c));
  return c.schema();
}

proto::DataSchema SyntheticSchemaOf(const std::string& rel) {
  proto::SyntheticConfig c;
  LOOM_CHECK_OK(config::ParseTextProtoFileInto(Path(rel), &c));
  LOOM_CHECK_OK(data::ValidateSyntheticConfig(c));
  return data::SyntheticSchema(c);
}

void Check(const std::string& rel, const proto::DataSchema& schema, int world_size) {
  SCOPED_TRACE(rel);
  auto c = config::LoadConfig(Path(rel));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(optim::ValidateOptimizerConfig(c->optimizer()).ok())
      << optim::ValidateOptimizerConfig(c->optimizer());
  auto spec = embedding::BuildEmbeddingSpec(c->embedding(), world_size);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto adapter = InputAdapter::Create(*c, schema, 4, false);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  auto dims = model::ResolveModelDims(c->model(), adapter->seq_len());
  EXPECT_TRUE(dims.ok()) << dims.status();
  auto b = config::ResolveLocalBatchSize(c->train(), world_size);
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(c->data().train_files().empty());
  EXPECT_FALSE(c->data().eval_files().empty());
}

TEST(ConfigsTest, Quickstart) {
  Check("configs/quickstart.pbtxt", SyntheticSchemaOf("configs/data/synthetic_quickstart.pbtxt"),
        2);
}
TEST(ConfigsTest, SyntheticIndustrial) {
  Check("configs/synthetic_industrial.pbtxt",
        SyntheticSchemaOf("configs/data/synthetic_industrial.pbtxt"), 64);
}
TEST(ConfigsTest, MovieLens) {
  Check("configs/movielens100k.pbtxt", data::MovieLensSchema(data::MovieLensVariant::k100K, 50), 2);
  Check("configs/movielens1m.pbtxt", data::MovieLensSchema(data::MovieLensVariant::k1M, 50), 2);
}
TEST(ConfigsTest, PaperDatasets) {
  Check("configs/amazon_electronics.pbtxt",
        BarsSchema("configs/data/bars_amazon_electronics_x1.pbtxt"), 8);
  Check("configs/taobao_ad.pbtxt", BarsSchema("configs/data/bars_taobao_ad_x1.pbtxt"), 8);
  Check("configs/kuaivideo.pbtxt", BarsSchema("configs/data/bars_kuai_video_x1.pbtxt"), 8);
}

}  // namespace
}  // namespace loom::train
