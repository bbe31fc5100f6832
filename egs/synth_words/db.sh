# Where this recipe's optional real benchmarks live; the environment variable of the same name wins.
# STR_BENCHMARKS: space-separated benchmark dirs ([NAME=]DIR; an LMDB dir with data.mdb, a folder
# with gt.txt, or a parent dir of such dirs, e.g. the toolkits' data_lmdb_release/evaluation).
# Empty: only the rendered test sets.
STR_BENCHMARKS=${STR_BENCHMARKS:-}
# STR_FEATURE_OPTS: options of local/extract_image_features.py for every set (stage 2), e.g.
# "--max_width 320"; empty: grey, height 32, 8-256 columns (conf/ expects input_size 32).
STR_FEATURE_OPTS=${STR_FEATURE_OPTS:-}
