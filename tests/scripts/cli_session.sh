#!/usr/bin/env bash
# The README's AWS CLI session, run against a real dynaraft process.
# Usage: cli_session.sh <dynaraft binary> <aws binary>
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/start_server.sh" "$1"
AWS="$2"
DYNARAFT_BIN="$1"
ddb() { "$AWS" dynamodb --endpoint-url "$DYNARAFT_URL" --output json "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

ddb create-table --table-name Music \
  --attribute-definitions AttributeName=Artist,AttributeType=S AttributeName=SongTitle,AttributeType=S \
  --key-schema AttributeName=Artist,KeyType=HASH AttributeName=SongTitle,KeyType=RANGE \
  --billing-mode PAY_PER_REQUEST | grep -q '"TableStatus": "CREATING"' || fail "create-table should report CREATING"
ddb wait table-exists --table-name Music
ddb describe-table --table-name Music | grep -q '"TableStatus": "ACTIVE"' || fail "table not ACTIVE after wait"

for i in $(seq 1 12); do
  ddb put-item --table-name Music --item "{\"Artist\":{\"S\":\"Acme Band\"},\"SongTitle\":{\"S\":\"Song $(printf %02d "$i")\"},\"Plays\":{\"N\":\"$i\"}}"
done
ddb put-item --table-name Music --item '{"Artist":{"S":"No One You Know"},"SongTitle":{"S":"Call Me Today"},"Plays":{"N":"0"}}'

out=$(ddb get-item --table-name Music --key '{"Artist":{"S":"Acme Band"},"SongTitle":{"S":"Song 03"}}')
echo "$out" | grep -q '"N": "3"' || fail "get-item: $out"

out=$(ddb query --table-name Music --key-condition-expression "Artist = :a AND begins_with(SongTitle, :p)" \
  --expression-attribute-values '{":a":{"S":"Acme Band"},":p":{"S":"Song 1"}}')
echo "$out" | grep -q '"Count": 3' || fail "query begins_with: $out"

out=$(ddb update-item --table-name Music --key '{"Artist":{"S":"Acme Band"},"SongTitle":{"S":"Song 01"}}' \
  --update-expression "SET Plays = Plays + :inc" --condition-expression "Plays < :max" \
  --expression-attribute-values '{":inc":{"N":"10"},":max":{"N":"5"}}' --return-values UPDATED_NEW)
echo "$out" | grep -q '"N": "11"' || fail "update-item: $out"

if ddb update-item --table-name Music --key '{"Artist":{"S":"Acme Band"},"SongTitle":{"S":"Song 01"}}' \
  --update-expression "SET Plays = Plays + :inc" --condition-expression "Plays < :max" \
  --expression-attribute-values '{":inc":{"N":"10"},":max":{"N":"5"}}' 2>/tmp/dynaraft-cli-err; then
  fail "conditional update should have failed"
fi
grep -q ConditionalCheckFailedException /tmp/dynaraft-cli-err || fail "expected ConditionalCheckFailedException"

# The CLI paginates with --page-size through LastEvaluatedKey.
out=$(ddb scan --table-name Music --page-size 4)
echo "$out" | grep -q '"Count": 13' || fail "paginated scan: $out"

ddb delete-item --table-name Music --key '{"Artist":{"S":"No One You Know"},"SongTitle":{"S":"Call Me Today"}}'

# PartiQL, as the Developer Guide's examples run it with the CLI.
ddb execute-statement --statement "INSERT INTO Music VALUE {'Artist': 'Acme Band', 'SongTitle': 'PartiQL Rocks', 'Plays': 7}" >/dev/null
out=$(ddb execute-statement --statement "SELECT SongTitle, Plays FROM Music WHERE Artist = ? AND SongTitle = ?" \
  --parameters '[{"S":"Acme Band"},{"S":"PartiQL Rocks"}]')
echo "$out" | grep -q '"N": "7"' || fail "execute-statement SELECT: $out"
if ddb execute-statement --statement "INSERT INTO Music VALUE {'Artist': 'Acme Band', 'SongTitle': 'PartiQL Rocks'}" 2>/tmp/dynaraft-cli-err; then
  fail "a second INSERT of the key should have failed"
fi
grep -q DuplicateItemException /tmp/dynaraft-cli-err || fail "expected DuplicateItemException"
out=$(ddb batch-execute-statement --statements '[{"Statement":"UPDATE Music SET Plays = Plays + 1 WHERE Artist = '"'"'Acme Band'"'"' AND SongTitle = '"'"'PartiQL Rocks'"'"'"},{"Statement":"UPDATE Music SET Plays = 1 WHERE Artist = '"'"'Nobody'"'"' AND SongTitle = '"'"'None'"'"'"}]')
echo "$out" | grep -q '"Code": "ConditionalCheckFailed"' || fail "batch-execute-statement: $out"
ddb execute-transaction --transact-statements '[{"Statement":"EXISTS(SELECT * FROM Music WHERE Artist = '"'"'Acme Band'"'"' AND SongTitle = '"'"'Song 03'"'"' AND Plays = 3)"},{"Statement":"DELETE FROM Music WHERE Artist = '"'"'Acme Band'"'"' AND SongTitle = '"'"'PartiQL Rocks'"'"'"}]' >/dev/null
out=$(ddb execute-statement --statement "SELECT * FROM Music WHERE Artist = 'Acme Band' AND SongTitle = 'PartiQL Rocks'")
echo "$out" | grep -q '"Items": \[\]' || fail "execute-transaction should have deleted the item: $out"

# A stream turned on with the CLI, read back with `dynaraft streams tail`.
ddb update-table --table-name Music \
  --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES >/dev/null
ddb wait table-exists --table-name Music
ddb put-item --table-name Music --item '{"Artist":{"S":"Tail"},"SongTitle":{"S":"One"},"Plays":{"N":"1"}}'
ddb delete-item --table-name Music --key '{"Artist":{"S":"Tail"},"SongTitle":{"S":"One"}}'
tail=$("$1" streams tail --table Music --endpoint "$DYNARAFT_URL" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
  --region "$AWS_DEFAULT_REGION" --from-start --once)
[ "$(echo "$tail" | grep -c '"eventName":"INSERT"')" = 1 ] || fail "streams tail INSERT: $tail"
[ "$(echo "$tail" | grep -c '"eventName":"REMOVE"')" = 1 ] || fail "streams tail REMOVE: $tail"

# The Developer Guide's backup tutorial: back the table up, list its
# backups, restore it under its own name once it is deleted, delete the
# backup.
items() { ddb scan --table-name Music --query "sort_by(Items, &join('/', [Artist.S, SongTitle.S]))"; }
before=$(items)
[ "$before" != "[]" ] || fail "nothing to back up"
arn=$(ddb create-backup --table-name Music --backup-name MusicBackup --query BackupDetails.BackupArn --output text)
case "$arn" in arn:aws:dynamodb:*:table/Music/backup/*) ;; *) fail "create-backup ARN: $arn" ;; esac
for _ in $(seq 1 600); do
  [ "$(ddb describe-backup --backup-arn "$arn" --query BackupDescription.BackupDetails.BackupStatus --output text)" = AVAILABLE ] && break
  sleep 0.1
done
out=$(ddb list-backups --table-name Music)
echo "$out" | grep -q '"BackupName": "MusicBackup"' || fail "list-backups: $out"
echo "$out" | grep -q '"BackupStatus": "AVAILABLE"' || fail "backup not AVAILABLE: $out"
ddb delete-table --table-name Music >/dev/null
ddb wait table-not-exists --table-name Music
out=$(ddb restore-table-from-backup --target-table-name Music --backup-arn "$arn")
echo "$out" | grep -q '"RestoreInProgress": true' || fail "restore-table-from-backup: $out"
ddb wait table-exists --table-name Music
out=$(ddb describe-table --table-name Music --query Table.RestoreSummary)
echo "$out" | grep -q '"RestoreInProgress": false' || fail "restored table's summary: $out"
[ "$(items)" = "$before" ] || fail "the restored table differs from the backed-up one"
ddb delete-backup --backup-arn "$arn" | grep -q '"BackupStatus": "DELETED"' || fail "delete-backup"
out=$(ddb list-backups --table-name Music)
echo "$out" | grep -q MusicBackup && fail "a deleted backup is still listed: $out"

# Point-in-time recovery: on, a write, a moment, another write; the table
# restored to the moment has the first and not the second.
out=$(ddb update-continuous-backups --table-name Music \
  --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true)
echo "$out" | grep -q '"PointInTimeRecoveryStatus": "ENABLED"' || fail "update-continuous-backups: $out"
ddb put-item --table-name Music --item '{"Artist":{"S":"PITR"},"SongTitle":{"S":"Before"},"Plays":{"N":"1"}}'
sleep 1.2
moment=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.2
ddb put-item --table-name Music --item '{"Artist":{"S":"PITR"},"SongTitle":{"S":"After"},"Plays":{"N":"2"}}'
ddb restore-table-to-point-in-time --source-table-name Music --target-table-name MusicThen \
  --restore-date-time "$moment" | grep -q '"RestoreInProgress": true' || fail "restore-table-to-point-in-time"
ddb wait table-exists --table-name MusicThen
out=$(ddb query --table-name MusicThen --key-condition-expression "Artist = :a" \
  --expression-attribute-values '{":a":{"S":"PITR"}}' --query "Items[].SongTitle.S" --output text)
[ "$out" = "Before" ] || fail "the table restored to $moment holds: $out"
ddb delete-table --table-name MusicThen >/dev/null

# Export to the server's object store and import the export back, with the
# AWS CLI; then the same with dynaraft's own commands, and a backup and a
# restore with them.
mkdir -p "$DYNARAFT_OBJECTS/cli-bucket"
# The status of an export or import once it is no longer IN_PROGRESS (or
# after 60 s), e.g. job_status describe-export --export-arn ARN QUERY.
job_status() {
  for _ in $(seq 1 300); do
    s=$(ddb "$1" "$2" "$3" --query "$4" --output text)
    [ "$s" != IN_PROGRESS ] && break
    sleep 0.2
  done
  echo "$s"
}
table_arn=$(ddb describe-table --table-name Music --query Table.TableArn --output text)
export_arn=$(ddb export-table-to-point-in-time --table-arn "$table_arn" --s3-bucket cli-bucket \
  --s3-prefix music --query ExportDescription.ExportArn --output text)
status=$(job_status describe-export --export-arn "$export_arn" ExportDescription.ExportStatus)
[ "$status" = COMPLETED ] || fail "export $export_arn: $status"
count=$(ddb scan --table-name Music --select COUNT --query Count --output text)
exported=$(ddb describe-export --export-arn "$export_arn" --query ExportDescription.ItemCount --output text)
[ "$exported" = "$count" ] || fail "exported $exported items of $count"
keys='"AttributeDefinitions":[{"AttributeName":"Artist","AttributeType":"S"},{"AttributeName":"SongTitle","AttributeType":"S"}],"KeySchema":[{"AttributeName":"Artist","KeyType":"HASH"},{"AttributeName":"SongTitle","KeyType":"RANGE"}],"BillingMode":"PAY_PER_REQUEST"'
import_arn=$(ddb import-table --input-format DYNAMODB_JSON --input-compression-type GZIP \
  --s3-bucket-source "S3Bucket=cli-bucket,S3KeyPrefix=music/AWSDynamoDB/${export_arn##*/}/data/" \
  --table-creation-parameters "{\"TableName\":\"MusicImported\",$keys}" \
  --query ImportTableDescription.ImportArn --output text)
status=$(job_status describe-import --import-arn "$import_arn" ImportTableDescription.ImportStatus)
[ "$status" = COMPLETED ] || fail "import $import_arn: $status"
imported=$(ddb scan --table-name MusicImported --select COUNT --query Count --output text)
[ "$imported" = "$count" ] || fail "imported $imported items of $count"
ddb delete-table --table-name MusicImported >/dev/null

dynaraft() { "$DYNARAFT_BIN" "$@" --endpoint "$DYNARAFT_URL"; }
out=$(dynaraft export --table Music --bucket cli-bucket --prefix tool)
echo "$out" | grep -q '"ExportStatus": "COMPLETED"' || fail "dynaraft export: $out"
export_id=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ExportArn"].rsplit("/",1)[1])')
out=$(dynaraft import --table MusicTool --hash-key Artist:S --range-key SongTitle:S \
  --bucket cli-bucket --prefix "tool/AWSDynamoDB/$export_id/data/")
echo "$out" | grep -q "\"ImportedItemCount\": $count" || fail "dynaraft import: $out"
out=$(dynaraft backup --table MusicTool --name tool-backup)
echo "$out" | grep -q '"BackupStatus": "AVAILABLE"' || fail "dynaraft backup: $out"
backup_arn=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["BackupArn"])')
out=$(dynaraft restore --backup-arn "$backup_arn" --target MusicToolRestored)
echo "$out" | grep -q '"RestoreInProgress": false' || fail "dynaraft restore: $out"
restored=$(ddb scan --table-name MusicToolRestored --select COUNT --query Count --output text)
[ "$restored" = "$count" ] || fail "restored $restored items of $count"
for t in MusicTool MusicToolRestored; do ddb delete-table --table-name "$t" >/dev/null; done
ddb delete-backup --backup-arn "$backup_arn" >/dev/null

ddb delete-table --table-name Music >/dev/null
ddb wait table-not-exists --table-name Music
echo "AWS CLI session: ok"
