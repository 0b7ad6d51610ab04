// `loom data convert-movielens`: MovieLens 100K / 1M ratings as a CTR data set under the
// MovieLens CTR protocol v1 (docs/datasets.md gives it in full; results are comparable only
// under exactly this protocol):
//   - one sample per rating; label = 1 if rating >= 4 else 0; group id = the raw user id;
//   - split: all ratings sorted by (timestamp, user_id, item_id) (then input line, for exact
//     duplicates); the first floor(0.8 N) are train, the rest test;
//   - a user's events are ordered by (timestamp, item_id); a sample's history is the user's
//     events with a timestamp strictly earlier than the sample's (same-second events are not
//     history), most recent last, the last T = 50;
//   - sequences (k = 3, T = 50): item_history (item ids, item_id's table), genre_history (the
//     first-listed genre of each history item, the genres table), rating_history (the earlier
//     ratings, ids 1..5 as they are);
//   - sparse: user_id, item_id, gender, age (1M codes; 100K ages bucketed <18:1, 18-24:18,
//     25-34:25, 35-44:35, 45-49:45, 50-55:50, 56+:56), occupation, zip3 (first 3 characters),
//     release_decade (from the release date in 100K, the "(yyyy)" title suffix in 1M; unknown
//     is id 0), hour and weekday of the timestamp (UTC), genres (multi-hot, mean-pooled);
//   - dense (m = 2): log1p(the user's number of earlier events), log1p(the item's number of
//     earlier events over all users), "earlier" meaning strictly earlier timestamps;
//   - categorical values get ids 1..V per feature in order of first appearance in the
//     time-sorted train split (a multi-hot bag in its listed order); 0 is padding and unknown:
//     test values unseen in train map to 0.
// Sequences are stored unpadded (0..T ids, oldest first); the embedding layer pre-pads with 0.
//
// Output: out/train/part-*.loom, out/test/part-*.loom, out/schema.pbtxt, out/movielens.json.
// Malformed input lines are bad records ("u.data:123: ...") under the policy; ratings of
// unknown users or items are bad records too.
#ifndef LOOM_DATA_MOVIELENS_H_
#define LOOM_DATA_MOVIELENS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

enum class MovieLensVariant { k100K, k1M };

// "100k" / "1m" (case-insensitive).
StatusOr<MovieLensVariant> ParseMovieLensVariant(const std::string& name);

struct MovieLensOptions {
  MovieLensVariant variant = MovieLensVariant::k100K;
  std::string input_dir;  // holds u.data, u.user, u.item (100K) or ratings.dat, users.dat,
                          // movies.dat (1M)
  std::string out_dir;
  int max_history = 50;  // T (the protocol's value; change only for experiments)
  int64_t block_rows = 8192;
  proto::BadRecordPolicy bad_record_policy = proto::BAD_RECORDS_FAIL_PAST_THRESHOLD;
  int64_t max_bad_records = 10;
  std::string producer;
};

struct MovieLensResult {
  int64_t ratings = 0;  // valid ratings (samples)
  int64_t train_rows = 0, test_rows = 0;
  int64_t train_positives = 0, test_positives = 0;
  int64_t bad_records = 0;
  proto::DataSchema schema;
  std::vector<std::string> train_files, test_files;
};

StatusOr<MovieLensResult> ConvertMovieLens(const MovieLensOptions& options);

// The schema the protocol produces (vocabulary sizes 0 = not yet known).
proto::DataSchema MovieLensSchema(MovieLensVariant variant, int max_history);

}  // namespace loom::data

#endif  // LOOM_DATA_MOVIELENS_H_
