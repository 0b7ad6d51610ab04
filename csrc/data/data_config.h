// The trainer's entry to csrc/data: validating a DataConfig (data.proto) and opening this
// rank's train / eval readers from it.
//
//   LOOM_RETURN_IF_ERROR(data::ValidateDataConfig(config.data()));       // no file access
//   LOOM_ASSIGN_OR_RETURN(auto train, data::OpenTrainReader(config.data(), rank, world));
//   LOOM_ASSIGN_OR_RETURN(auto eval, data::OpenEvalReader(config.data(), rank, world));
#ifndef LOOM_DATA_DATA_CONFIG_H_
#define LOOM_DATA_DATA_CONFIG_H_

#include <memory>

#include "csrc/core/status.h"
#include "csrc/data/reader.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

// Range checks of every DataConfig field, without touching files. The error names the field
// path: "data.reader.prefetch_blocks: must be >= 1, got 0". train_files may be empty here
// (OpenTrainReader reports it).
Status ValidateDataConfig(const proto::DataConfig& config);

// Expands config.train_files, loads config.schema_file when set, and opens rank's reader with
// the config's reader settings. Errors name the field or file at fault.
StatusOr<std::unique_ptr<Reader>> OpenTrainReader(const proto::DataConfig& config, int rank,
                                                  int world_size);
// The same for config.eval_files, with ReaderOptions::ForEval() (no shuffle, no dropped rows).
StatusOr<std::unique_ptr<Reader>> OpenEvalReader(const proto::DataConfig& config, int rank,
                                                 int world_size);

}  // namespace loom::data

#endif  // LOOM_DATA_DATA_CONFIG_H_
