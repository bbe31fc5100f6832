# Where the corpora live. Environment variables of the same name win.
# FSDD: Free Spoken Digit Dataset (folder with recordings/*.wav). If unset and absent,
# local/data.sh downloads it into downloads/.
FSDD=${FSDD:-}
