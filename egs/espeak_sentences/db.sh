# This recipe synthesises its corpus (espeak-ng + WordNet's example sentences, installed by
# local/install_espeak.sh); there is no corpus location to set.
