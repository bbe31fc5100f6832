# Where this recipe's corpus lives; the environment variable of the same name wins.
MYCORPUS=${MYCORPUS:-}
