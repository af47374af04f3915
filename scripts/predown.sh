#!/bin/sh
# Before `azd down` deletes the app's resource group: remove what the app added outside it. The event subscription
# (and the system topic, if this app created it and nobody else subscribed to it), and the app identity's role assignments on the staging workspace,
# the registry and the production workspace. The workspaces and the registry themselves are never touched.
set -eu
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

require AZURE_SUBSCRIPTION_ID STAGING_RESOURCE_GROUP STAGING_WORKSPACE REGISTRY_NAME REGISTRY_RESOURCE_GROUP \
  PRODUCTION_RESOURCE_GROUP PRODUCTION_WORKSPACE

sub=$AZURE_SUBSCRIPTION_ID
topic=${PROMOTION_SYSTEM_TOPIC:-}
if [ -n "$topic" ]; then
  az eventgrid system-topic event-subscription delete --name promote-models --system-topic-name "$topic" \
    --resource-group "$STAGING_RESOURCE_GROUP" --yes
  echo "ok: removed the subscription promote-models from the system topic $topic"
  # A topic this app created goes too, unless others subscribed to it meanwhile (a workspace has only one).
  if [ "${PROMOTION_SYSTEM_TOPIC_CREATED:-false}" = true ]; then
    others=$(az eventgrid system-topic event-subscription list --system-topic-name "$topic" \
      --resource-group "$STAGING_RESOURCE_GROUP" --query "length(@)" -o tsv)
    if [ "$others" = 0 ]; then
      az eventgrid system-topic delete --name "$topic" --resource-group "$STAGING_RESOURCE_GROUP" --yes
      echo "ok: deleted the system topic $topic, which this app created"
    else
      echo "kept the system topic $topic: it has $others other subscriptions"
    fi
  fi
fi

principal=${AZURE_PRINCIPAL_ID:-}
if [ -n "$principal" ]; then
  for scope in \
    "$(workspace_id "$sub" "$STAGING_RESOURCE_GROUP" "$STAGING_WORKSPACE")" \
    "$(registry_id "${REGISTRY_SUBSCRIPTION_ID:-$sub}" "$REGISTRY_RESOURCE_GROUP" "$REGISTRY_NAME")" \
    "$(workspace_id "${PRODUCTION_SUBSCRIPTION_ID:-$sub}" "$PRODUCTION_RESOURCE_GROUP" "$PRODUCTION_WORKSPACE")"; do
    az role assignment delete --assignee "$principal" --scope "$scope"
  done
  echo "ok: removed the app identity's role assignments on the workspaces and the registry"
fi
