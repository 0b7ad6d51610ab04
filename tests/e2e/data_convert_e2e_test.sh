#!/usr/bin/env bash
# loom data convert-criteo and convert-csv from the command line: rows written, the
# convert.json report, checksums (inspect), the bad-record policies (skip names the line; fail
# exits non-zero naming file, line and fault) and an unknown flag refused. A few seconds.
source "$(dirname "$0")/e2e_lib.sh"

# A Criteo day: 200 rows (label, 13 integers, 26 hex categories, some fields empty), then one
# line with 2 fields (line 201).
python3 - > day_0 <<'PY'
import random
random.seed(7)
for _ in range(200):
    row = [str(random.randint(0, 1))]
    row += [str(random.randint(0, 99)) if random.random() > 0.1 else "" for _ in range(13)]
    row += ["%08x" % random.getrandbits(32) if random.random() > 0.1 else "" for _ in range(26)]
    print("\t".join(row))
print("bad\tline")
PY

note "convert-criteo, bad records skipped"
"$LOOM_DATA" convert-criteo --input day_0 --out criteo --hash-buckets 1000 --bad-records skip \
  > skip.log 2>&1 || { cat skip.log; fail "convert-criteo --bad-records skip exited non-zero"; }
grep -q "wrote 200 rows in 1 file(s) to criteo" skip.log || { cat skip.log; fail "summary"; }
grep -q "day_0:201" skip.log || { cat skip.log; fail "the skipped record is not named"; }
grep -q '"rows": 200' criteo/convert.json || fail "convert.json rows"
grep -q '"bad_records": 1' criteo/convert.json || fail "convert.json bad_records"
"$LOOM_DATA" inspect criteo/part-00000.loom > inspect.log 2>&1 || fail "inspect exited non-zero"
grep -q "checksums: OK" inspect.log || { cat inspect.log; fail "inspect: checksums"; }

note "convert-criteo, bad records fatal"
if "$LOOM_DATA" convert-criteo --input day_0 --out criteo_fail --bad-records fail > fail.log 2>&1; then
  fail "convert-criteo --bad-records fail accepted a bad line"
fi
grep -q "day_0:201: 2 fields, expected 40" fail.log || { cat fail.log; fail "fatal message"; }

note "convert-criteo, unknown flag"
if "$LOOM_DATA" convert-criteo --input day_0 --out x --no-such-flag 1 > flag.log 2>&1; then
  fail "an unknown flag was accepted"
fi
grep -q "unknown flag --no-such-flag" flag.log || { cat flag.log; fail "unknown-flag message"; }

note "convert-csv with a DelimitedTextConfig"
cat > schema.pbtxt <<'PB'
schema {
  label: "click"
  dense { name: "price" }
  sparse { name: "item" vocabulary_size: 100 }
}
column { column: "click" }
column { column: "price" missing_dense: -1 }
column { column: "item" }
PB
printf 'click,price,item\n1,2.5,7\n0,,99\n1,"1e3",0\n1,zz,1\n' > m.csv
"$LOOM_DATA" convert-csv --schema schema.pbtxt --input m.csv --out csv --bad-records skip \
  > csv.log 2>&1 || { cat csv.log; fail "convert-csv exited non-zero"; }
grep -q "wrote 3 rows in 1 file(s) to csv (4 data lines, 1 bad records skipped)" csv.log ||
  { cat csv.log; fail "convert-csv summary"; }
grep -q "m.csv:5: column 'price' (field 2): 'zz' is not a finite number" csv.log ||
  { cat csv.log; fail "the bad CSV record is not named"; }
"$LOOM_DATA" inspect csv/part-00000.loom > inspect_csv.log 2>&1 || fail "inspect (csv)"
grep -q "checksums: OK" inspect_csv.log || { cat inspect_csv.log; fail "inspect (csv): checksums"; }
echo "PASS"
