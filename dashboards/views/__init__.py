"""The dashboard's pages: one Streamlit script each, run by `dashboards/app.py` through `st.navigation`
(not imported). Not named `pages/`, which Streamlit would also serve as old-style pages."""
