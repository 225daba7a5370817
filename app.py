"""dfkd-viz — the Streamlit app: ``streamlit run app.py`` (or ``make app``).

Pages live in ``pages/``; each reads the run store and draws. Nothing here trains: runs are
detached worker processes started through :mod:`dfkd_viz.runs.manager`.
"""

import streamlit as st

st.set_page_config(page_title="dfkd-viz", page_icon=":material/science:", layout="wide")
st.session_state["_dv_app"] = True  # pages check it (see pages/_ui.py: page_setup)

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/setup.py", title="Setup", icon=":material/tune:", url_path="setup"),
    st.Page("pages/live.py", title="Live", icon=":material/monitoring:", url_path="live"),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("pages/decisions.py", title="Decisions", icon=":material/rule:", url_path="decisions"),
    st.Page(
        "pages/embeddings.py",
        title="Embeddings",
        icon=":material/scatter_plot:",
        url_path="embeddings",
    ),
    st.Page(
        "pages/saliency.py", title="Saliency", icon=":material/visibility:", url_path="saliency"
    ),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:", url_path="sweeps"),
    st.Page(
        "pages/out-of-domain.py",
        title="Out-of-domain",
        icon=":material/swap_horiz:",
        url_path="out-of-domain",
    ),
    st.Page("pages/audit.py", title="Audit", icon=":material/policy:", url_path="audit"),
    st.Page("pages/teachers.py", title="Teachers", icon=":material/school:", url_path="teachers"),
]

st.navigation(PAGES, position="sidebar").run()
