# Sourced by models/train.sh and models/femto.sh: the training pipeline's virtualenv with the
# pinned models/requirements.txt, (re)made when missing or when the requirements changed; sets
# $venv.
venv=${EDGEPM_MODELS_VENV:-$HOME/.cache/edgepm-models-venv}
if [ ! -x "$venv/bin/python" ] || ! cmp -s models/requirements.txt "$venv/.edgepm-requirements"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r models/requirements.txt
  cp models/requirements.txt "$venv/.edgepm-requirements"
fi
