//! Table definitions, portable types only (both backends share them).

diesel::table! {
    directories (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        created_at -> BigInt,
        deletion -> Text,
        max_page_size -> Nullable<Integer>,
        lookup_show_deactivated -> Bool,
    }
}

diesel::table! {
    admin_tokens (id) {
        id -> Text,
        name -> Text,
        lookup -> Text,
        hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        at -> BigInt,
        directory_id -> Nullable<Text>,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        resource_type -> Text,
        resource_id -> Nullable<Text>,
        operation -> Text,
        details -> Text,
    }
}

diesel::table! {
    secrets (id) {
        id -> Text,
        directory_id -> Text,
        owner -> Text,
        name -> Text,
        nonce -> Text,
        ciphertext -> Text,
        created_at -> BigInt,
        rotated_at -> BigInt,
    }
}

diesel::table! {
    directory_keys (id) {
        id -> Text,
        directory_id -> Text,
        name -> Text,
        lookup -> Text,
        hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        directory_id -> Text,
        user_name -> Text,
        user_name_folded -> Text,
        external_id -> Nullable<Text>,
        display_name_folded -> Nullable<Text>,
        active -> Bool,
        data -> Text,
        created_at -> BigInt,
        modified_at -> BigInt,
        version -> BigInt,
        manager_id -> Nullable<Text>,
        deprovisioned_at -> Nullable<BigInt>,
        source_connection -> Nullable<Text>,
        source_id -> Nullable<Text>,
        manager_name_pending -> Nullable<Text>,
    }
}

diesel::table! {
    user_values (user_id, attr_id, pos, value) {
        user_id -> Text,
        attr_id -> Integer,
        pos -> Integer,
        value -> Text,
    }
}

diesel::table! {
    value_attrs (id) {
        id -> Integer,
        directory_id -> Text,
        attr -> Text,
    }
}

diesel::table! {
    groups (id) {
        id -> Text,
        directory_id -> Text,
        display_name -> Text,
        display_name_folded -> Text,
        external_id -> Nullable<Text>,
        data -> Text,
        created_at -> BigInt,
        modified_at -> BigInt,
        version -> BigInt,
        source_connection -> Nullable<Text>,
        source_id -> Nullable<Text>,
    }
}

diesel::table! {
    connections (id) {
        id -> Text,
        directory_id -> Text,
        name -> Text,
        kind -> Text,
        config -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        delta_state -> Nullable<Text>,
        last_full_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    consent_requests (id) {
        id -> Text,
        state_hash -> Text,
        connection_id -> Text,
        place -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        verifier_nonce -> Text,
        verifier_ciphertext -> Text,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    connection_consents (connection_id, place) {
        connection_id -> Text,
        place -> Text,
        state -> Text,
        reason -> Nullable<Text>,
        consented_at -> Nullable<BigInt>,
        changed_at -> BigInt,
    }
}

diesel::table! {
    sync_runs (id) {
        id -> Text,
        connection_id -> Text,
        trigger -> Text,
        mode -> Text,
        dry_run -> Bool,
        status -> Text,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        report -> Text,
    }
}

diesel::table! {
    sync_leases (connection_id) {
        connection_id -> Text,
        holder -> Text,
        run_id -> Text,
        acquired_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    sync_stage_users (run_id, source_id) {
        run_id -> Text,
        source_id -> Text,
        user_id -> Text,
        user_name_folded -> Nullable<Text>,
        created -> Text,
        data -> Text,
    }
}

diesel::table! {
    sync_stage_groups (run_id, source_id) {
        run_id -> Text,
        source_id -> Text,
        name -> Text,
        group_type -> Text,
        changed -> Bool,
        members_read -> Bool,
        imported -> Bool,
    }
}

diesel::table! {
    sync_source_groups (connection_id, source_id) {
        connection_id -> Text,
        source_id -> Text,
        name -> Text,
        group_type -> Text,
        members_read -> Bool,
        imported -> Bool,
    }
}

diesel::table! {
    sync_source_members (connection_id, group_source_id, user_source_id) {
        connection_id -> Text,
        group_source_id -> Text,
        user_source_id -> Text,
    }
}

diesel::table! {
    sync_source_subgroups (connection_id, group_source_id, subgroup_source_id) {
        connection_id -> Text,
        group_source_id -> Text,
        subgroup_source_id -> Text,
    }
}

diesel::table! {
    sync_stage_subgroups (run_id, group_source_id, subgroup_source_id) {
        run_id -> Text,
        group_source_id -> Text,
        subgroup_source_id -> Text,
    }
}

diesel::table! {
    sync_stage_members (run_id, group_source_id, user_source_id) {
        run_id -> Text,
        group_source_id -> Text,
        user_source_id -> Text,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        directory_id -> Text,
        group_id -> Text,
        user_id -> Text,
    }
}

diesel::table! {
    saml_idps (directory_id) {
        directory_id -> Text,
        sso_url -> Text,
        certificate_pem -> Text,
        idp_entity_id -> Text,
        user_attribute -> Text,
        allow_idp_initiated -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    saml_replays (id) {
        id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    web_sessions (id_hash) {
        id_hash -> Text,
        directory_id -> Text,
        user_id -> Text,
        csrf_token -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    web_keys (name) {
        name -> Text,
        secret -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(directory_keys -> directories (directory_id));
diesel::joinable!(secrets -> directories (directory_id));
diesel::joinable!(connections -> directories (directory_id));
diesel::joinable!(sync_runs -> connections (connection_id));
diesel::joinable!(sync_leases -> connections (connection_id));
diesel::joinable!(consent_requests -> connections (connection_id));
diesel::joinable!(connection_consents -> connections (connection_id));
diesel::joinable!(users -> directories (directory_id));
diesel::joinable!(groups -> directories (directory_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));
diesel::joinable!(user_values -> value_attrs (attr_id));
diesel::allow_tables_to_appear_in_same_query!(
    directories,
    directory_keys,
    admin_tokens,
    audit_events,
    secrets,
    connections,
    consent_requests,
    connection_consents,
    sync_runs,
    sync_leases,
    sync_stage_users,
    sync_stage_groups,
    sync_stage_members,
    sync_source_groups,
    sync_source_members,
    sync_stage_subgroups,
    sync_source_subgroups,
    users,
    user_values,
    value_attrs,
    groups,
    group_members,
    saml_idps,
    saml_replays,
    web_sessions,
    web_keys
);
