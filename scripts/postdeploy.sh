#!/bin/sh
# After `azd deploy`: subscribe on_model_registered to the staging workspace's ModelRegistered events
# (infra/eventgrid.bicep). Only now: Event Grid validates the webhook when the subscription is created, and the host
# creates the Event Grid extension's system key some seconds after the code arrives, so this waits for the key.
# A workspace has at most one system topic: an existing one is reused (SYSTEM_TOPIC_NAME names it, or it is found).
set -eu
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

require AZURE_ENV_NAME AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME \
  AZURE_STORAGE_ACCOUNT_NAME DEAD_LETTER_CONTAINER STAGING_RESOURCE_GROUP STAGING_WORKSPACE

attempts=${PROMOTION_HOOK_ATTEMPTS:-30}
pause=${PROMOTION_HOOK_PAUSE_SECONDS:-10}
ws_id=$(workspace_id "$AZURE_SUBSCRIPTION_ID" "$STAGING_RESOURCE_GROUP" "$STAGING_WORKSPACE")
lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# The workspace's system topic: the one named, else the one already there (ARM ids compare case-insensitively).
topic=${SYSTEM_TOPIC_NAME:-}
if [ -z "$topic" ]; then
  topic=$(az eventgrid system-topic list --resource-group "$STAGING_RESOURCE_GROUP" --query "[].[name, source]" -o tsv |
    while IFS="$(printf '\t')" read -r name source; do
      if [ "$(lower "$source")" = "$(lower "$ws_id")" ]; then echo "$name"; fi
    done | head -n 1)
fi
created=${PROMOTION_SYSTEM_TOPIC_CREATED:-false}
if [ -n "$topic" ]; then
  reuse=true
  if [ "$topic" != "${PROMOTION_SYSTEM_TOPIC:-}" ]; then
    created=false # someone else's topic: predown removes only our subscription from it
  fi
  # Dead letters are written with the topic's own identity (the storage account takes no key).
  az eventgrid system-topic update --name "$topic" --resource-group "$STAGING_RESOURCE_GROUP" \
    --identity systemassigned --output none
else
  reuse=false
  created=true
  topic="evgst-$STAGING_WORKSPACE"
fi
azd env set PROMOTION_SYSTEM_TOPIC "$topic"
azd env set PROMOTION_SYSTEM_TOPIC_CREATED "$created"

# Wait for the Event Grid extension's system key (the deployment reads it with listKeys; it is never printed).
n=1
until [ -n "$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
  --query systemKeys.eventgrid_extension -o tsv 2>/dev/null || true)" ]; do
  if [ "$n" -ge "$attempts" ]; then
    echo "error: the host has not created the eventgrid_extension system key after $attempts attempts;" \
      "check that on_model_registered was deployed (az functionapp function list), then run: azd hooks run postdeploy" >&2
    exit 1
  fi
  echo "waiting for the Event Grid extension's system key ($n/$attempts)..."
  n=$((n + 1))
  sleep "$pause"
done

n=1
until deploy group --resource-group "$STAGING_RESOURCE_GROUP" "promotion-eventgrid-$AZURE_ENV_NAME" eventgrid.bicep \
  systemTopicName="$topic" \
  reuseSystemTopic="$reuse" \
  stagingWorkspaceName="$STAGING_WORKSPACE" \
  appResourceGroup="$AZURE_RESOURCE_GROUP" \
  functionAppName="$AZURE_FUNCTION_APP_NAME" \
  storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
  deadLetterContainerName="$DEAD_LETTER_CONTAINER"; do
  # The webhook's validation handshake fails while the new code is still starting: try again.
  if [ "$n" -ge 3 ]; then
    echo "error: the Event Grid subscription could not be created; see the deployment promotion-eventgrid-$AZURE_ENV_NAME" \
      "in resource group $STAGING_RESOURCE_GROUP" >&2
    exit 1
  fi
  n=$((n + 1))
  sleep "$pause"
done
echo "ok: $STAGING_WORKSPACE's ModelRegistered events go to on_model_registered (system topic $topic)"
