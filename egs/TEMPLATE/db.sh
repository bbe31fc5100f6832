# Where this recipe's corpus lives (TEMPLATE: rename MYCORPUS); the environment variable of the same name wins.
MYCORPUS=${MYCORPUS:-}
