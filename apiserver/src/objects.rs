//! Stored objects: create, get, list, update, patch, delete, and the `status` and `scale`
//! subresources, with Kubernetes' semantics.
//!
//! An object is stored as JSON under `/baton/registry/<group>/<plural>/<ns>/<name>`; its
//! `resourceVersion` is the key's mod revision, set on the way out, never stored. Every write
//! is a store transaction that compares the mod revision it read, so concurrent writers
//! never lose each other's changes: a client that sent a `resourceVersion` gets 409 when it
//! is stale; a patch or an unconditional update is re-applied to the latest version.

use axum::http::StatusCode;
use baton_store::{Compare, KeyValue, Op, Revision, Txn};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::admission::{self, Context, Guard, Proposed, Read};
use crate::kinds::{Decoded, Kind, Source};
use crate::managed::{self, Part};
use crate::request::{FieldValidation, Patch, Query};
use crate::status::{ApiError, ApiResult, Target};
use crate::{ApiServer, Reply};

/// Which object, and which part of it, a write changes.
#[derive(Clone, Copy)]
struct Spot<'a> {
    kind: &'a Kind,
    namespace: Option<&'a str>,
    name: &'a str,
    part: Part,
}

/// What one attempt of a read-modify-write came to.
enum Attempt {
    /// It wrote: the answer.
    Wrote(Reply),
    /// The answer without a write (nothing changed, or a dry run).
    Answered(Reply),
    /// The object changed since it was read: read it again.
    Lost,
}

/// How many times a patch or unconditional update is re-applied after losing a race.
pub const MAX_ATTEMPTS: usize = 16;

/// The object of a stored key, with its `resourceVersion`.
pub fn object_of(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key)))?;
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

/// Now, at the one-second precision Kubernetes timestamps have.
pub fn now_seconds() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Metadata fields only the server sets.
const SERVER_MANAGED: [&str; 8] = [
    "managedFields",
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

impl ApiServer {
    fn decoder(kind: &Kind) -> ApiResult<crate::kinds::Decoder> {
        match kind.source {
            Source::Registry(decoder) => Ok(decoder),
            Source::InstanceView | Source::AgentView => {
                Err(ApiError::method_not_allowed(&format!("{} (a read-only view)", kind.plural)))
            }
        }
    }

    /// The lease objects of a kind with a TTL are attached to. One lease serves every write
    /// for a tenth of the TTL, so an object expires between `ttl` and `1.1 × ttl` after its
    /// last write, and the store holds few leases.
    async fn ttl_lease(&self, ttl: std::time::Duration) -> ApiResult<baton_store::LeaseId> {
        let mut lease = self.ttl_lease.lock().await;
        let renew_after = ttl / 10;
        if let Some((id, granted)) = *lease
            && granted.elapsed() < renew_after
        {
            return Ok(id);
        }
        let id = self.store.grant_lease(ttl + renew_after).await?;
        *lease = Some((id, std::time::Instant::now()));
        Ok(id)
    }

    /// Runs `kind`'s admission checks of a write (of a create when `before` is `None`: its
    /// namespace must be open), after reading what they read in one store request.
    async fn admit(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        before: Option<&Value>,
        after: &Value,
    ) -> ApiResult<Guard> {
        let write = Proposed { target: kind.target(name), namespace, before, after };
        let opening = namespace.filter(|_| before.is_none()).map(|ns| (ns, self.namespace_key(ns)));
        let also = opening.iter().map(|(_, key)| Read::Key(key.clone())).collect();
        let wanted = admission::reads(&kind.admission, &self.keys, &write, also);
        let read = self.reads.read(wanted).await?;
        if let Some((namespace, key)) = &opening {
            Self::check_namespace_open(kind, namespace, name, read.key(key).flatten())?;
        }
        let context = Context { store: self.store.as_ref(), keys: &self.keys, read: Some(&*read) };
        admission::admit(&kind.admission, context, &write).await
    }

    /// Writes `object` at `key` if `compares` hold (and the admission guard's, with its ops),
    /// attached to the TTL lease when the kind has a TTL (retrying once with a fresh lease if
    /// the cached one is gone).
    async fn put_txn(
        &self,
        kind: &Kind,
        mut compares: Vec<Compare>,
        key: &str,
        object: &Value,
        guard: Guard,
    ) -> ApiResult<baton_store::TxnResponse> {
        let value = without_version(object);
        compares.extend(guard.compares);
        let extra = guard.ops;
        let Some(ttl) = kind.ttl else {
            let ops = std::iter::once(Op::put(key, value)).chain(extra);
            return Ok(self.store.txn(Txn::new().when(compares).and_then(ops)).await?);
        };
        for attempt in 0..2 {
            let lease = self.ttl_lease(ttl).await?;
            let ops = std::iter::once(Op::put_with_lease(key, value.clone(), lease)).chain(extra.iter().cloned());
            let txn = Txn::new().when(compares.clone()).and_then(ops);
            match self.store.txn(txn).await {
                Err(baton_store::Error::LeaseNotFound(_)) if attempt == 0 => *self.ttl_lease.lock().await = None,
                other => return Ok(other?),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn object_key(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> String {
        self.keys.registry_object(kind.store_group(), &kind.plural, namespace, name)
    }

    /// Decodes and validates `object` for storage; unknown fields are refused, reported or
    /// dropped as the request's field validation says.
    fn decode(
        &self,
        kind: &Kind,
        object: &Value,
        name: &str,
        validation: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let decoder = Self::decoder(kind)?;
        // What every object may carry is checked first, whatever the kind.
        let errors = baton_api::validation::validate_metadata(&object["metadata"]);
        if !errors.is_empty() {
            return Err(ApiError::invalid(&kind.target(name), &errors));
        }
        let Decoded { object, unknown_fields } =
            decoder(object, &self.limits.input).map_err(|errors| ApiError::invalid(&kind.target(name), &errors))?;
        if !unknown_fields.is_empty() {
            match validation {
                FieldValidation::Strict => {
                    let errors: Vec<baton_api::FieldError> = unknown_fields
                        .iter()
                        .map(|f| baton_api::FieldError::unknown(f.clone(), format!("{} has no field {f:?}", kind.kind)))
                        .collect();
                    return Err(ApiError::invalid(&kind.target(name), &errors));
                }
                FieldValidation::Warn => warnings.extend(unknown_fields.iter().map(|f| format!("unknown field {f:?}"))),
                FieldValidation::Ignore => {}
            }
        }
        Ok(object)
    }

    pub async fn get_object(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let kv = self.store.get(&self.object_key(kind, namespace, name)).await?;
        let kv = kv.ok_or_else(|| ApiError::not_found(&kind.target(name)))?;
        object_of(&kv)
    }

    /// Who writes, for managed fields.
    fn writer<'a>(query: &'a Query, api_version: &'a str, time: &'a str) -> managed::Writer<'a> {
        managed::Writer { manager: query.manager(), api_version, time }
    }

    fn scope(kind: &Kind, part: Part) -> managed::Scope {
        managed::Scope { part, status_subresource: kind.status_subresource }
    }

    pub async fn create(&self, kind: &Kind, namespace: Option<&str>, query: &Query, object: Value) -> ApiResult<Reply> {
        self.create_owned(kind, namespace, query, object, false).await
    }

    /// POST, or the first server-side apply (`applied`): the creator owns every field it
    /// set (an applier only those of its configuration).
    async fn create_owned(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        query: &Query,
        mut object: Value,
        applied: bool,
    ) -> ApiResult<Reply> {
        check_type_meta(kind, &mut object)?;
        let metadata =
            object["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        let name = match metadata.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match metadata.get("generateName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    let error = baton_api::FieldError::required("metadata.name", "name or generateName is required");
                    return Err(ApiError::invalid(&kind.target(""), &[error]));
                }
            },
        };
        if let Some(problem) = baton_api::names::dns_subdomain_problem(&name) {
            let error = baton_api::FieldError::invalid("metadata.name", name.as_str(), problem);
            return Err(ApiError::invalid(&kind.target(&name), &[error]));
        }
        check_namespace(metadata.get("namespace"), namespace)?;
        for field in SERVER_MANAGED {
            metadata.remove(field);
        }
        metadata.insert("name".into(), json!(name));
        if let Some(ns) = namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(now_seconds().to_string()));
        metadata.insert("generation".into(), json!(1));
        if kind.status_subresource {
            // Status belongs to the controller; a create never sets it.
            object.as_object_mut().expect("checked above").remove("status");
        }
        let scope = Self::scope(kind, Part::Main);
        let applied_fields = applied.then(|| managed::fields_of(&object, scope));
        if let Some(on_create) = kind.on_create {
            on_create(&mut object);
        }
        let mut warnings = Vec::new();
        let mut object = self.decode(kind, &object, &name, query.field_validation, &mut warnings)?;
        let (api_version, time) = (kind.api_version(), now_seconds().to_string());
        let writer = Self::writer(query, &api_version, &time);
        match applied_fields {
            Some(fields) => managed::set_entries(
                &mut object,
                &[managed::Entry {
                    manager: writer.manager.to_string(),
                    operation: managed::Operation::Apply,
                    api_version: api_version.clone(),
                    time: time.clone(),
                    subresource: None,
                    fields,
                }],
            ),
            None => managed::record_update(&json!({}), &mut object, &writer, scope),
        }
        let key = self.object_key(kind, namespace, &name);
        for _ in 0..MAX_ATTEMPTS {
            let guard = self.admit(kind, namespace, &name, None, &object).await?;
            if query.dry_run {
                return Ok(Reply::json(StatusCode::CREATED, object).with_warnings(warnings));
            }
            let response = self.put_txn(kind, vec![Compare::absent(&key)], &key, &object, guard).await?;
            if response.succeeded {
                object["metadata"]["resourceVersion"] = json!(response.revision.to_string());
                return Ok(Reply::json(StatusCode::CREATED, object).with_warnings(warnings));
            }
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(&kind.target(&name)));
            }
            // What an admission check read changed meanwhile: check again.
        }
        Err(ApiError::conflict(&kind.target(&name), "too many concurrent writers; try again"))
    }

    /// PUT: the body is the whole object (or its status, or a Scale).
    pub async fn replace(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        query: &Query,
        mut body: Value,
    ) -> ApiResult<Reply> {
        if part == Part::Scale {
            check_scale_type_meta(&body)?;
        } else {
            check_type_meta(kind, &mut body)?;
            check_namespace(body.pointer("/metadata/namespace"), namespace)?;
        }
        match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(body_name) if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let precondition = body.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        let spot = Spot { kind, namespace, name, part };
        self.write(spot, query, precondition, false, move |current| match part {
            Part::Scale => with_replicas(kind, current, &body),
            Part::Main | Part::Status => Ok(body.clone()),
        })
        .await
    }

    /// PATCH: the patch applies to the latest version (or its Scale).
    pub async fn patch(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        query: &Query,
        patch: Patch,
    ) -> ApiResult<Reply> {
        let patch = match patch {
            Patch::Apply(config) => return self.apply(kind, namespace, name, part, query, config).await,
            Patch::Strategic(_) if !kind.group.is_empty() => {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                    crate::request::PATCH_TYPES,
                ));
            }
            patch => patch,
        };
        self.write(Spot { kind, namespace, name, part }, query, None, false, |current| {
            let view = if part == Part::Scale { scale_of(kind, current)? } else { current.clone() };
            let current_version = view.pointer("/metadata/resourceVersion").cloned();
            let patched = apply_patch(view, &patch, &kind.target(name))?;
            // A patch that names a resourceVersion is a precondition, as in Kubernetes.
            if let Some(asked) = patched.pointer("/metadata/resourceVersion")
                && Some(asked) != current_version.as_ref()
            {
                return Err(ApiError::conflict(
                    &kind.target(name),
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            match part {
                Part::Scale => with_replicas(kind, current, &patched),
                Part::Main | Part::Status => Ok(patched),
            }
        })
        .await
    }

    /// Server-side apply: creates the object from `config` if it does not exist; otherwise
    /// merges it in, removes what this manager stopped applying, and refuses (409) to change
    /// fields other managers own unless `force` is given.
    pub async fn apply(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        query: &Query,
        mut config: Value,
    ) -> ApiResult<Reply> {
        if query.field_manager.is_none() {
            return Err(ApiError::bad_request(
                "PATCH: fieldManager is required for apply requests (application/apply-patch+yaml)",
            ));
        }
        if !config.is_object() {
            return Err(ApiError::bad_request("an apply configuration must be an object"));
        }
        check_type_meta(kind, &mut config)?;
        match config.pointer("/metadata/name").and_then(Value::as_str) {
            Some(given) if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => config["metadata"]["name"] = json!(name),
        }
        check_namespace(config.pointer("/metadata/namespace"), namespace)?;
        let precondition = config.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        let scope = Self::scope(kind, part);
        let (api_version, time) = (kind.api_version(), now_seconds().to_string());
        for _ in 0..MAX_ATTEMPTS {
            if part == Part::Main && self.store.get(&self.object_key(kind, namespace, name)).await?.is_none() {
                match self.create_owned(kind, namespace, query, config.clone(), true).await {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            }
            let writer = Self::writer(query, &api_version, &time);
            let change = |current: &Value| {
                managed::apply(Some(current), &config, &writer, scope, query.force)
                    .map_err(|conflicts| conflict_error(kind, name, &conflicts))
            };
            let spot = Spot { kind, namespace, name, part };
            match self.write(spot, query, precondition.clone(), true, change).await {
                Err(e) if e.code == StatusCode::NOT_FOUND && part == Part::Main => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(&kind.target(name), "too many concurrent writers; try again"))
    }

    /// The read-modify-write loop behind every update: `change` maps the latest object to
    /// what the client wants; the server keeps what the client may not change, validates,
    /// and writes if the object is still the one it read. Managed fields record the change
    /// (an apply's `change` has computed them already).
    ///
    /// The first attempt starts from the object as a shared watch of its kind last saw it,
    /// when one runs (the controllers watch every App): if that is still the stored version,
    /// the write's compare holds and the store was read once less — for a controller's status
    /// patch, one read of two. Anything but a write made from that guess (a refusal, an
    /// answer without a write, a lost compare) is done again from the store.
    async fn write(
        &self,
        spot: Spot<'_>,
        query: &Query,
        precondition: Option<String>,
        applying: bool,
        change: impl Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Reply> {
        let Spot { kind, namespace, name, .. } = spot;
        let key = self.object_key(kind, namespace, name);
        let mut guess = self.hubs.object(&key).and_then(|object| {
            let revision = object.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok()?;
            Some((Value::clone(&object), revision))
        });
        for _ in 0..MAX_ATTEMPTS {
            let guessed = guess.is_some();
            let (current, revision) = match guess.take() {
                Some(seen) => seen,
                None => {
                    let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(&kind.target(name)))?;
                    (object_of(&kv)?, kv.mod_revision)
                }
            };
            match self.write_once(&spot, &key, query, &precondition, applying, &change, current, revision).await {
                Ok(Attempt::Wrote(reply)) => return Ok(reply),
                Ok(Attempt::Lost) => {}
                // Answered or refused on a guess: the store decides.
                _ if guessed => {}
                Ok(Attempt::Answered(reply)) => return Ok(reply),
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(&kind.target(name), "too many concurrent writers; try again"))
    }

    /// One attempt of [`Self::write`] from `current`, the object at `revision`.
    #[allow(clippy::too_many_arguments)]
    async fn write_once(
        &self,
        spot: &Spot<'_>,
        key: &str,
        query: &Query,
        precondition: &Option<String>,
        applying: bool,
        change: &impl Fn(&Value) -> ApiResult<Value>,
        current: Value,
        revision: Revision,
    ) -> ApiResult<Attempt> {
        let Spot { kind, namespace, name, part } = *spot;
        if let Some(expected) = precondition
            && expected.as_str() != revision.to_string()
        {
            return Err(ApiError::conflict(
                &kind.target(name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let wanted = change(&current)?;
        if !wanted.is_object() {
            return Err(ApiError::bad_request(format!("the {} must stay a JSON object", kind.kind)));
        }
        let applied_fields = wanted.pointer("/metadata/managedFields").cloned();
        let merged = merge_for_update(kind, &current, wanted, part);
        let mut warnings = Vec::new();
        let mut object = match self.decode(kind, &merged, name, query.field_validation, &mut warnings) {
            Ok(object) => object,
            // Ratcheting, as Kubernetes does for custom resources: a write that leaves the
            // spec as stored — a status, a finalizer, a label — is not refused for a spec
            // stored under older rules (the controller must still report on it and let it
            // go). Metadata is checked whatever.
            Err(_)
                if merged.get("spec") == current.get("spec")
                    && baton_api::validation::validate_metadata(&merged["metadata"]).is_empty() =>
            {
                merged
            }
            Err(e) => return Err(e),
        };
        count_generation(&current, &mut object);
        if applying {
            match applied_fields {
                Some(fields) => object["metadata"]["managedFields"] = fields,
                None => _ = object["metadata"].as_object_mut().map(|m| m.remove("managedFields")),
            }
        } else {
            let (api_version, time) = (kind.api_version(), now_seconds().to_string());
            let writer = Self::writer(query, &api_version, &time);
            let scope = Self::scope(kind, part);
            managed::record_update(&current, &mut object, &writer, scope);
        }
        if only_managed_times_differ(&object, &current) {
            object["metadata"]["managedFields"] = current["metadata"]["managedFields"].clone();
        }
        let finalized = object.pointer("/metadata/deletionTimestamp").is_some()
            && object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
        let unchanged = same_but_version(&object, &current, false);
        let reply_object = |object: Value| -> ApiResult<Value> {
            if part == Part::Scale { scale_of(kind, &object) } else { Ok(object) }
        };
        let guard = if finalized {
            Guard::default()
        } else {
            self.admit(kind, namespace, name, Some(&current), &object).await?
        };
        if query.dry_run || (unchanged && !finalized) {
            // Kubernetes does not bump the resourceVersion of a write that changes nothing.
            if unchanged {
                object["metadata"]["resourceVersion"] = json!(revision.to_string());
            }
            return Ok(Attempt::Answered(Reply::json(StatusCode::OK, reply_object(object)?).with_warnings(warnings)));
        }
        let compares = vec![Compare::mod_revision(key, revision)];
        let response = if finalized {
            self.store.txn(Txn::new().when(compares).and_then([Op::delete(key)])).await?
        } else {
            self.put_txn(kind, compares, key, &object, guard).await?
        };
        if !response.succeeded {
            // The object (a precondition then fails above) or the dependency graph changed.
            return Ok(Attempt::Lost);
        }
        if finalized {
            self.object_removed(namespace).await;
        }
        object["metadata"]["resourceVersion"] = json!(response.revision.to_string());
        Ok(Attempt::Wrote(Reply::json(StatusCode::OK, reply_object(object)?).with_warnings(warnings)))
    }

    pub async fn delete(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        query: &Query,
        options: &Value,
    ) -> ApiResult<Reply> {
        Self::decoder(kind)?;
        let key = self.object_key(kind, namespace, name);
        let wanted_version = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str);
        let wanted_uid = options.pointer("/preconditions/uid").and_then(Value::as_str);
        for _ in 0..MAX_ATTEMPTS {
            let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(&kind.target(name)))?;
            let mut object = object_of(&kv)?;
            if wanted_version.is_some_and(|v| v != kv.mod_revision.to_string()) {
                return Err(ApiError::conflict(
                    &kind.target(name),
                    &format!(
                        "the ResourceVersion in the precondition ({}) does not match the ResourceVersion in record ({}). The object might have been modified",
                        wanted_version.unwrap_or_default(),
                        kv.mod_revision
                    ),
                ));
            }
            if let Some(uid) = wanted_uid
                && object.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return Err(ApiError::conflict(
                    &kind.target(name),
                    &format!("the UID in the precondition ({uid}) does not match the UID in record"),
                ));
            }
            let has_finalizers =
                object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            if has_finalizers {
                // Deletion waits for the finalizers: mark it, and let their owners finish.
                if object.pointer("/metadata/deletionTimestamp").is_some() || query.dry_run {
                    return Ok(Reply::json(StatusCode::ACCEPTED, object));
                }
                object["metadata"]["deletionTimestamp"] = json!(now_seconds().to_string());
                object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                // Marking for deletion changes nothing admission checks look at.
                let compares = vec![Compare::mod_revision(&key, kv.mod_revision)];
                let response = self.put_txn(kind, compares, &key, &object, Guard::default()).await?;
                if response.succeeded {
                    object["metadata"]["resourceVersion"] = json!(response.revision.to_string());
                    return Ok(Reply::json(StatusCode::ACCEPTED, object));
                }
                continue;
            }
            if query.dry_run {
                return Ok(Reply::json(StatusCode::OK, object));
            }
            let txn = Txn::new().when([Compare::mod_revision(&key, kv.mod_revision)]).and_then([Op::delete(&key)]);
            if self.store.txn(txn).await?.succeeded {
                self.object_removed(namespace).await;
                return Ok(Reply::json(StatusCode::OK, object));
            }
        }
        Err(ApiError::conflict(&kind.target(name), "too many concurrent writers; try again"))
    }

    /// GET of the scale subresource.
    pub async fn get_scale(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        scale_of(kind, &self.get_object(kind, namespace, name).await?)
    }
}

/// 409 for an apply that would change fields other managers own, worded as Kubernetes does.
fn conflict_error(kind: &Kind, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
    let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
    for conflict in conflicts {
        let owner = format!("{:?} using {}", conflict.manager, conflict.api_version);
        let field = managed::display(&conflict.field);
        match by_manager.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, fields)) => fields.push(field),
            None => by_manager.push((owner, vec![field])),
        }
    }
    let described: Vec<String> = by_manager
        .iter()
        .map(|(owner, fields)| match fields.as_slice() {
            [one] => format!("conflict with {owner}: {one}"),
            many => format!("conflicts with {owner}:\n- {}", many.join("\n- ")),
        })
        .collect();
    let count = conflicts.len();
    let message =
        format!("Apply failed with {count} conflict{}: {}", if count == 1 { "" } else { "s" }, described.join("\n"));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {:?} using {}", c.manager, c.api_version),
                   "field": managed::display(&c.field)})
        })
        .collect();
    let mut error = ApiError::conflict(&kind.target(name), "");
    error.message = message;
    error.details = Some(json!({"name": name, "group": kind.group, "kind": kind.plural, "causes": causes}));
    error
}

/// The object to validate and store for an update of `part`: what the client may change
/// from `wanted`, everything else from `current`.
fn merge_for_update(kind: &Kind, current: &Value, wanted: Value, part: Part) -> Value {
    let mut merged = match part {
        Part::Status => {
            let mut merged = current.clone();
            merged["status"] = wanted.get("status").cloned().unwrap_or(Value::Null);
            merged
        }
        Part::Main | Part::Scale => {
            let mut merged = wanted;
            if !merged["metadata"].is_object() {
                merged["metadata"] = json!({});
            }
            for field in SERVER_MANAGED {
                match current["metadata"].get(field) {
                    Some(value) => merged["metadata"][field] = value.clone(),
                    None => _ = merged["metadata"].as_object_mut().map(|m| m.remove(field)),
                }
            }
            for field in ["name", "namespace"] {
                merged["metadata"][field] = current["metadata"][field].clone();
            }
            if kind.status_subresource {
                match current.get("status") {
                    Some(status) => merged["status"] = status.clone(),
                    None => _ = merged.as_object_mut().map(|m| m.remove("status")),
                }
            }
            merged["apiVersion"] = current["apiVersion"].clone();
            merged["kind"] = current["kind"].clone();
            merged
        }
    };
    if let Some(status) = merged.as_object_mut()
        && status.get("status").is_some_and(Value::is_null)
    {
        status.remove("status");
    }
    merged
}

/// Counts a change of the spec in `object`'s generation. Compared once defaults are filled
/// in, so a manifest that leaves out defaulted fields (re-applied by a GitOps tool every few
/// minutes) changes nothing.
fn count_generation(current: &Value, object: &mut Value) {
    if object.get("spec") != current.get("spec") {
        let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        object["metadata"]["generation"] = json!(generation + 1);
    }
}

/// Whether `object` differs from `current` only in the times of its managed fields: a write
/// that changes nothing else changes nothing (as Kubernetes treats a no-op apply).
fn only_managed_times_differ(object: &Value, current: &Value) -> bool {
    object != current && same_but_version(object, current, true)
}

/// Whether `a` and `b` are equal but for their `resourceVersion` and, with `managed_times`,
/// the times of their managed fields — compared in place, without the copies of both
/// objects taking those two fields out would need (a write compares its object twice).
fn same_but_version(a: &Value, b: &Value, managed_times: bool) -> bool {
    same_but(a, b, None, |key, va, vb| match key {
        "metadata" => same_but(va, vb, Some("resourceVersion"), |key, va, vb| match key {
            "managedFields" if managed_times => same_but_times(va, vb),
            _ => va == vb,
        }),
        _ => va == vb,
    })
}

/// Whether two lists of managed fields are equal but for their entries' times.
fn same_but_times(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else { return a == b };
    a.len() == b.len() && a.iter().zip(b).all(|(ea, eb)| same_but(ea, eb, Some("time"), |_, va, vb| va == vb))
}

/// Whether `a` and `b` are equal but for the key `skipped`, their other keys' values
/// compared by `same`; values other than objects as they are.
fn same_but(a: &Value, b: &Value, skipped: Option<&str>, same: impl Fn(&str, &Value, &Value) -> bool) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    let counted = |m: &serde_json::Map<String, Value>| m.len() - skipped.map_or(0, |k| usize::from(m.contains_key(k)));
    counted(a) == counted(b)
        && a.iter()
            .filter(|(key, _)| Some(key.as_str()) != skipped)
            .all(|(key, va)| b.get(key).is_some_and(|vb| same(key, va, vb)))
}

/// `object` as stored: its JSON without `metadata.resourceVersion` (the store's revision
/// says it), written without a copy of the object.
pub fn without_version(object: &Value) -> String {
    use serde::ser::{Serialize, SerializeMap, Serializer};
    /// An object, its metadata written as [`Metadata`].
    struct Stored<'a>(&'a serde_json::Map<String, Value>);
    /// Metadata without its `resourceVersion`.
    struct Metadata<'a>(&'a serde_json::Map<String, Value>);
    impl Serialize for Stored<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut out = serializer.serialize_map(Some(self.0.len()))?;
            for (key, value) in self.0 {
                match (key.as_str(), value.as_object()) {
                    ("metadata", Some(metadata)) => out.serialize_entry(key, &Metadata(metadata))?,
                    _ => out.serialize_entry(key, value)?,
                }
            }
            out.end()
        }
    }
    impl Serialize for Metadata<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut out = serializer.serialize_map(None)?;
            for (key, value) in self.0.iter().filter(|(key, _)| *key != "resourceVersion") {
                out.serialize_entry(key, value)?;
            }
            out.end()
        }
    }
    match object.as_object() {
        // Serializing JSON values to a string cannot fail: their keys are strings.
        Some(map) => serde_json::to_string(&Stored(map)).expect("JSON values serialize"),
        None => object.to_string(),
    }
}

/// Fills in or checks `apiVersion` and `kind` of a request body.
fn check_type_meta(kind: &Kind, object: &mut Value) -> ApiResult<()> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(format!("the body must be a JSON or YAML object (a {})", kind.kind)));
    };
    let api_version = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => _ = map.insert("apiVersion".into(), json!(api_version)),
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => _ = map.insert("kind".into(), json!(kind.kind)),
    }
    if !map.contains_key("metadata") {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

fn check_scale_type_meta(body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a Scale object"));
    }
    match (body.get("apiVersion").and_then(Value::as_str), body.get("kind").and_then(Value::as_str)) {
        (Some(v), _) if v != "autoscaling/v1" => {
            Err(ApiError::bad_request(format!("the scale subresource takes autoscaling/v1 Scale, not {v}")))
        }
        (_, Some(k)) if k != "Scale" => {
            Err(ApiError::bad_request(format!("the scale subresource takes a Scale, not a {k}")))
        }
        _ => Ok(()),
    }
}

fn check_namespace(in_body: Option<&Value>, in_path: Option<&str>) -> ApiResult<()> {
    match (in_body.and_then(Value::as_str).filter(|ns| !ns.is_empty()), in_path) {
        (Some(body), Some(path)) if body != path => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({body}) does not match the namespace sent on the request ({path})"
        ))),
        (Some(body), None) => {
            Err(ApiError::bad_request(format!("a cluster-scoped object has no namespace, got {body:?}")))
        }
        _ => Ok(()),
    }
}

/// Segments of a `.spec.instances` path.
fn path_segments(path: &str) -> Vec<&str> {
    path.split('.').filter(|s| !s.is_empty()).collect()
}

/// The `autoscaling/v1` Scale of an object.
fn scale_of(kind: &Kind, object: &Value) -> ApiResult<Value> {
    let paths = kind.scale.as_ref().ok_or_else(|| ApiError::not_found_path(&format!("{}/scale", kind.plural)))?;
    let get = |path: &str| crate::kinds::column_value(object, path).cloned().unwrap_or(json!(0));
    let metadata = &object["metadata"];
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": get(&paths.spec_replicas)},
        "status": {"replicas": get(&paths.status_replicas)},
    }))
}

/// The object with its replicas set from a Scale's `spec.replicas`.
fn with_replicas(kind: &Kind, current: &Value, scale: &Value) -> ApiResult<Value> {
    let paths = kind.scale.as_ref().ok_or_else(|| ApiError::not_found_path(&format!("{}/scale", kind.plural)))?;
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(Value::Null);
    let mut object = current.clone();
    let segments = path_segments(&paths.spec_replicas);
    let mut slot = &mut object;
    for segment in segments {
        if !slot.is_object() {
            *slot = json!({});
        }
        slot = &mut slot[segment];
    }
    *slot = replicas;
    Ok(object)
}

/// Applies a merge or JSON patch; a patch that cannot apply is a 422 naming the problem.
pub(crate) fn apply_patch(mut object: Value, patch: &Patch, target: &Target<'_>) -> ApiResult<Value> {
    match patch {
        Patch::Merge(merge) => {
            if !merge.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut object, merge);
        }
        Patch::Strategic(patch) => crate::strategic::merge(&mut object, patch)?,
        Patch::Apply(_) => return Err(ApiError::internal("an apply is not a patch to apply")),
        Patch::Json(operations) => {
            // Kubernetes treats `test` of a missing path as comparing with null (kube-rs'
            // finalizer helper relies on it); json-patch would fail it.
            let operations: Vec<json_patch::PatchOperation> = operations
                .iter()
                .filter(|op| match op {
                    json_patch::PatchOperation::Test(test) => {
                        !(test.value.is_null() && object.pointer(test.path.as_str()).is_none())
                    }
                    _ => true,
                })
                .cloned()
                .collect();
            json_patch::patch(&mut object, &operations).map_err(|e| {
                let error =
                    baton_api::FieldError::invalid("", Value::Null, format!("the JSON patch cannot be applied: {e}"));
                ApiError::invalid(target, &[error])
            })?;
        }
    }
    Ok(object)
}

/// Five characters as Kubernetes uses for `generateName` (no vowels, no look-alikes).
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_kind() -> Kind {
        crate::kinds::all().remove(0)
    }

    fn stored() -> Value {
        json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App",
               "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 2, "resourceVersion": "7",
                            "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"instances": 3, "cmd": "x"}, "status": {"running": 3}})
    }

    #[test]
    fn a_main_update_keeps_status_and_server_fields_and_counts_spec_changes() {
        let wanted = json!({"metadata": {"name": "web", "uid": "forged", "labels": {"a": "b"}},
                            "spec": {"instances": 5, "cmd": "x"}, "status": {"running": 99}});
        let mut merged = merge_for_update(&app_kind(), &stored(), wanted, Part::Main);
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["metadata"]["labels"]["a"], "b");
        assert_eq!(merged["status"]["running"], 3, "status is the controller's");
        count_generation(&stored(), &mut merged);
        assert_eq!(merged["metadata"]["generation"], 3, "a spec change bumps generation");

        let same_spec =
            json!({"metadata": {"name": "web", "labels": {"a": "b"}}, "spec": {"instances": 3, "cmd": "x"}});
        let mut merged = merge_for_update(&app_kind(), &stored(), same_spec, Part::Main);
        count_generation(&stored(), &mut merged);
        assert_eq!(merged["metadata"]["generation"], 2, "a metadata change does not");
    }

    #[test]
    fn a_status_update_changes_only_status() {
        let wanted = json!({"metadata": {"name": "web", "labels": {"x": "y"}}, "spec": {"instances": 9}, "status": {"running": 1}});
        let merged = merge_for_update(&app_kind(), &stored(), wanted, Part::Status);
        assert_eq!(merged["status"]["running"], 1);
        assert_eq!(merged["spec"]["instances"], 3);
        assert!(merged["metadata"].get("labels").is_none());
        assert_eq!(merged["metadata"]["generation"], 2);
    }

    #[test]
    fn scale_reads_and_writes_the_replica_paths() {
        let kind = app_kind();
        let scale = scale_of(&kind, &stored()).unwrap();
        assert_eq!((scale["spec"]["replicas"].clone(), scale["status"]["replicas"].clone()), (json!(3), json!(0)));
        let scaled = with_replicas(&kind, &stored(), &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(scaled["spec"]["instances"], 5);
    }

    /// The comparisons and the stored form made in place agree with the same made on copies
    /// with the version (and the managed times) taken out.
    #[test]
    fn comparisons_without_version_agree_with_copies_without_it() {
        let strip = |v: &Value, times: bool| {
            let mut v = v.clone();
            if let Some(metadata) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
                if let Some(entries) = metadata.get_mut("managedFields").and_then(Value::as_array_mut)
                    && times
                {
                    entries.iter_mut().filter_map(Value::as_object_mut).for_each(|e| _ = e.remove("time"));
                }
            }
            v
        };
        let managed = |time: &str, manager: &str| json!([{"manager": manager, "operation": "Update", "time": time, "fieldsV1": {"f:status": {}}}]);
        let base = {
            let mut v = stored();
            v["metadata"]["managedFields"] = managed("1", "baton");
            v
        };
        let mut variants = vec![base.clone(), stored(), json!({"kind": "App"}), json!(null), json!({"metadata": 1})];
        let edits: [fn(&mut Value); 9] = [
            |v| v["metadata"]["resourceVersion"] = json!("8"),
            |v| _ = v["metadata"].as_object_mut().unwrap().remove("resourceVersion"),
            |v| v["metadata"]["managedFields"][0]["time"] = json!("2"),
            |v| _ = v["metadata"]["managedFields"][0].as_object_mut().unwrap().remove("time"),
            |v| v["metadata"]["managedFields"][0]["manager"] = json!("kubectl"),
            |v| v["metadata"]["labels"] = json!({"a": "b"}),
            |v| v["status"]["running"] = json!(2),
            |v| v["extra"] = json!(true),
            |v| _ = v.as_object_mut().unwrap().remove("metadata"),
        ];
        for edit in edits {
            let mut v = base.clone();
            edit(&mut v);
            variants.push(v.clone());
            // Two edits at once: the version and something else.
            v["metadata"]["resourceVersion"] = json!("9");
            variants.push(v);
        }
        for a in &variants {
            assert_eq!(serde_json::from_str::<Value>(&without_version(a)).unwrap(), strip(a, false), "{a}");
            for b in &variants {
                assert_eq!(same_but_version(a, b, false), strip(a, false) == strip(b, false), "{a} / {b}");
                let differ = a != b && strip(a, true) == strip(b, true);
                assert_eq!(only_managed_times_differ(a, b), differ, "{a} / {b}");
            }
        }
    }

    #[test]
    fn json_patch_test_of_a_missing_path_equals_null() {
        let target = Target { group: "baton.dev", plural: "apps", kind: "App", name: "web" };
        let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ]))
        .unwrap();
        let patched = apply_patch(stored(), &Patch::Json(ops), &target).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["f"]));
        let failing: Vec<json_patch::PatchOperation> =
            serde_json::from_value(json!([{"op": "test", "path": "/spec/instances", "value": 4}])).unwrap();
        let err = apply_patch(stored(), &Patch::Json(failing), &target).unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
