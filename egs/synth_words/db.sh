# Where this recipe's optional real benchmarks live; the environment variable of the same name wins.
# STR_BENCHMARKS: space-separated benchmark dirs ([NAME=]DIR; an LMDB dir with data.mdb, a folder
# with gt.txt, or a parent dir of such dirs, e.g. the toolkits' data_lmdb_release/evaluation).
# Empty: only the rendered test sets.
STR_BENCHMARKS=${STR_BENCHMARKS:-}
